// Kotlin-idiomatic events for the generated bindings: a cold Flow of HushEvent that starts a
// listener when collected and stops it when the collector goes away. Translation only.
package dev.hush

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.filter
import kotlinx.coroutines.flow.transformWhile
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

/**
 * The progress of one attachment transfer (by message id: for an upload, pass the id given to
 * `FileDetails.messageId` from `newMessageId()`), until it is done.
 */
fun HushClient.transferProgress(messageId: String, upload: Boolean): Flow<HushEvent.TransferProgress> =
    events()
        .filterIsInstance<HushEvent.TransferProgress>()
        .filter { it.messageId == messageId && it.upload == upload }
        .transformWhile { emit(it); it.done < it.total }
