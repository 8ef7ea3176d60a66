//! The one cross-target shim: `Send` bounds, spawning, a second thread, sleeping and the clock.
//!
//! Native builds run on tokio and need `Send` futures; the browser is single-threaded and its
//! futures are not `Send`. Everything target-specific about execution lives here, so the rest of
//! the crate has no `cfg` of its own.

use std::future::Future;
use std::time::Duration;

/// `Send` on native targets, nothing in the browser.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets, nothing in the browser.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets, nothing in the browser.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` on native targets, nothing in the browser.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// Runs a future in the background. Native: on the current tokio runtime.
#[cfg(not(target_arch = "wasm32"))]
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(future);
}

/// How many cores the device has (1 if it can't tell).
#[cfg(not(target_arch = "wasm32"))]
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `a` here and `b` beside it on a scoped thread, when the device has a second core and a
/// thread can be started; otherwise (one core, or the OS refused) `b` runs here after `a`.
/// `b` is `Fn` so that it can still run here if its thread could not finish.
#[cfg(not(target_arch = "wasm32"))]
pub fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl Fn() -> B + Sync) -> (A, B) {
    if cores() < 2 {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new().name("hush-worker".into()).spawn_scoped(scope, &b);
        let a = a();
        match other.map(|h| h.join()) {
            Ok(Ok(b)) => (a, b),
            _ => (a, b()),
        }
    })
}

/// Starts `f` on a thread of its own, whose result the returned receiver yields; `None` where
/// that would not make anything faster (one core) or no thread could be started. The caller
/// then does the work itself when it needs the result; if the thread fails, the receiver says
/// so and the caller does the same.
#[cfg(not(target_arch = "wasm32"))]
pub fn beside<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<tokio::sync::oneshot::Receiver<T>> {
    if cores() < 2 {
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hush-ahead".into())
        .spawn(move || {
            // The receiver may be gone (its pipeline stopped); the result is then not needed.
            let _ = tx.send(f());
        })
        .ok()?;
    Some(rx)
}

/// `None`: the page has one thread, so the caller does the work when it needs the result.
#[cfg(target_arch = "wasm32")]
pub fn beside<T: 'static>(
    _f: impl FnOnce() -> T + 'static,
) -> Option<tokio::sync::oneshot::Receiver<T>> {
    None
}

/// Runs `a`, then `b`: the page has one thread.
#[cfg(target_arch = "wasm32")]
pub fn join<A, B>(a: impl FnOnce() -> A, b: impl Fn() -> B) -> (A, B) {
    (a(), b())
}

/// Waits for `duration`.
#[cfg(not(target_arch = "wasm32"))]
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Runs a future in the background. Browser: on the page's event loop.
#[cfg(target_arch = "wasm32")]
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + 'static,
{
    wasm_bindgen_futures::spawn_local(future);
}

#[cfg(target_arch = "wasm32")]
mod js {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        // The global `setTimeout`: present in pages, workers and Node alike (unlike `window`).
        #[wasm_bindgen(js_name = setTimeout)]
        pub fn set_timeout(callback: &js_sys::Function, ms: i32) -> JsValue;
    }
}

/// Waits for `duration`.
#[cfg(target_arch = "wasm32")]
pub async fn sleep(duration: Duration) {
    let ms = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        js::set_timeout(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Runs `future` with a deadline; `None` if it did not finish in time.
#[cfg(target_arch = "wasm32")]
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    tokio::select! {
        out = future => Some(out),
        () = sleep(duration) => None,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> u64 {
    // `Date.now()` is an integral number of milliseconds, well inside u64.
    js_sys::Date::now().max(0.0) as u64
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs `future` with a deadline; `None` if it did not finish in time.
#[cfg(not(target_arch = "wasm32"))]
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    tokio::time::timeout(duration, future).await.ok()
}
