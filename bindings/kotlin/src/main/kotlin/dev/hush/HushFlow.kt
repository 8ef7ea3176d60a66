// Kotlin-idiomatic events for the generated bindings: a cold Flow of HushEvent that starts a
// listener when collected and stops it when the collector goes away. Translation only.
package dev.hush

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.channels.Channel

/** Every event from the moment of collection, in order, until the collector is cancelled. */
fun HushClient.events(): Flow<HushEvent> = callbackFlow {
    val handle = listen(object : EventListener {
        override fun onEvent(event: HushEvent) {
            trySend(event)
        }
    })
    awaitClose { handle.stop() }
}.buffer(Channel.UNLIMITED)
