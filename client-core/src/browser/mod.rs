//! The browser platform (wasm32): an IndexedDB [`Store`](crate::store::Store) and a WebSocket
//! [`Connector`](crate::transport::Connector).
//!
//! The browser can't open raw QUIC or files, so these replace `RedbStore` and `QuicConnector`
//! behind the same traits; everything above them (sessions, fanout, history, search, sync) is
//! the same code as on native. Both are single-threaded (`!Send`), as the browser is.

mod store;
mod transport;

pub use store::IndexedDbStore;
pub use transport::WebSocketConnector;

/// A JavaScript error as text (its `message`, or whatever it stringifies to).
fn js_error(value: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
