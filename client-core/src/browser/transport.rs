//! [`WebSocketConnector`]: the relay protocol over WebSocket (docs/PROTOCOL.md §14.15), for the
//! browser, which can't open raw QUIC.
//!
//! Each request opens a virtual stream (a new stream id), sends its `Request` frame and a FIN,
//! and waits for the `Response` frame; the subscription stream stays open for pushes and acks.
//! Incoming messages are routed to their stream by id. When the socket closes, every waiting
//! stream fails with [`TransportError::Disconnected`] and [`Link::closed`] resolves, so the
//! client's reconnect loop takes over exactly as with QUIC.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hush_protocol::frame;
use hush_protocol::websocket::{self as ws, WsMessage};
use hush_protocol::wire::{self, Request, Response, ServerPush, request, response, server_push};
use js_sys::{ArrayBuffer, Uint8Array};
use tokio::sync::{mpsc, oneshot, watch};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::js_error;
use crate::transport::{Connector, Deliveries, Link, TransportError};

/// How long opening the WebSocket (TCP, TLS and upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for its response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Browsers expose neither WebSocket pings nor a keep-alive, so a dead path (a dropped NAT
/// mapping, a laptop waking from sleep) would go unnoticed while the client only receives:
/// the link sends a cheap request this often and closes itself if none comes back in time.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long a heartbeat may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a relay's WebSocket listener, e.g. `wss://relay.example:4443`.
#[derive(Debug, Clone)]
pub struct WebSocketConnector {
    url: String,
}

impl WebSocketConnector {
    /// A connector for the relay at `url` (`wss://…`, or `ws://…` on loopback/behind a proxy).
    pub fn new(url: &str) -> Result<Self, TransportError> {
        if !(url.starts_with("wss://") || url.starts_with("ws://")) {
            return Err(TransportError::Protocol(format!(
                "a relay WebSocket URL starts with wss:// or ws://, not {url:?}"
            )));
        }
        Ok(Self { url: url.to_owned() })
    }
}

type Routes = HashMap<u32, mpsc::UnboundedSender<Vec<u8>>>;

struct Shared {
    routes: RefCell<Routes>,
    closed: watch::Sender<Option<String>>,
}

impl Shared {
    fn route(&self, message: Vec<u8>) {
        let Some(id) = ws::stream_of(&message) else { return };
        let fin = message.len() == ws::STREAM_ID_LEN;
        let mut routes = self.routes.borrow_mut();
        if let Some(tx) = routes.get(&id) {
            let delivered = tx.send(message).is_ok();
            if fin || !delivered {
                routes.remove(&id);
            }
        }
    }

    fn close(&self, why: String) {
        self.routes.borrow_mut().clear();
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// Owns the socket and its event handlers (dropping them would detach the callbacks).
struct WsLink {
    socket: WebSocket,
    shared: Rc<Shared>,
    next_stream: RefCell<u32>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for WsLink {
    fn drop(&mut self) {
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

#[async_trait(?Send)]
impl Connector for WebSocketConnector {
    async fn connect(&self) -> Result<Arc<dyn Link>, TransportError> {
        let socket = WebSocket::new_with_str(&self.url, ws::SUBPROTOCOL).map_err(|e| {
            TransportError::Disconnected(format!("cannot open {}: {}", self.url, js_error(&e)))
        })?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let (closed, _) = watch::channel(None);
        let shared = Rc::new(Shared { routes: RefCell::new(HashMap::new()), closed });

        let (opened_tx, opened) = oneshot::channel::<()>();
        let opened_tx = RefCell::new(Some(opened_tx));
        let on_open = Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = opened_tx.borrow_mut().take() {
                let _ = tx.send(());
            }
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let routes = Rc::clone(&shared);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() {
                routes.route(Uint8Array::new(&buf).to_vec());
            }
        });
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let closer = Rc::clone(&shared);
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            closer.close(format!("websocket closed ({}: {})", e.code(), e.reason()));
        });
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));

        let link = WsLink {
            socket,
            shared: Rc::clone(&shared),
            next_stream: RefCell::new(1),
            _on_message: on_message,
            _on_close: on_close,
        };
        let mut closed = shared.closed.subscribe();
        let open = async {
            tokio::select! {
                r = opened => r.map_err(|_| TransportError::Disconnected("socket dropped".into())),
                why = closed.wait_for(|c| c.is_some()) => {
                    let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
                    Err(TransportError::Disconnected(why))
                }
            }
        };
        let result = crate::runtime::timeout(CONNECT_TIMEOUT, open).await;
        link.socket.set_onopen(None);
        drop(on_open);
        // Browsers do not say why a WebSocket failed to open: the relay may be down, or its
        // certificate not trusted by this browser; the message names the address either way.
        let unreachable = |why: String| {
            TransportError::Disconnected(format!(
                "could not reach the relay at {}: {why} (it is down or unreachable, or this \
                 browser does not trust its certificate)",
                self.url
            ))
        };
        match result {
            Some(Ok(())) => Ok(Arc::new(link)),
            Some(Err(TransportError::Disconnected(why))) => Err(unreachable(why)),
            Some(Err(e)) => Err(e),
            None => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }
}

impl WsLink {
    fn open_stream(&self) -> Result<(u32, mpsc::UnboundedReceiver<Vec<u8>>), TransportError> {
        if let Some(why) = self.shared.closed.borrow().clone() {
            return Err(TransportError::Disconnected(why));
        }
        let id = {
            let mut next = self.next_stream.borrow_mut();
            let id = *next;
            *next = next.checked_add(1).ok_or_else(|| {
                TransportError::Disconnected("stream ids exhausted; reconnect".into())
            })?;
            id
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.routes.borrow_mut().insert(id, tx);
        Ok((id, rx))
    }

    /// Sends on stream `id`; on failure the stream's route is dropped.
    fn send(&self, id: u32, bytes: &[u8]) -> Result<(), TransportError> {
        self.socket.send_with_u8_array(bytes).map_err(|e| {
            self.shared.routes.borrow_mut().remove(&id);
            TransportError::Disconnected(js_error(&e))
        })
    }
}

/// Decodes the next frame of a stream; `Ok(None)` on its FIN.
fn next_frame(message: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, TransportError> {
    let message = message.ok_or_else(|| TransportError::Disconnected("websocket closed".into()))?;
    match ws::decode(&message, frame::MAX_FRAME_LEN) {
        Ok(WsMessage::Frame { body, .. }) => Ok(Some(body.to_vec())),
        Ok(WsMessage::Fin { .. }) => Ok(None),
        Err(e) => Err(TransportError::Protocol(e.to_string())),
    }
}

fn into_result(response: Response) -> Result<response::Body, TransportError> {
    match response.body {
        Some(response::Body::Error(e)) => Err(TransportError::Relay(e.into())),
        Some(body) => Ok(body),
        None => Err(TransportError::Protocol("empty response".into())),
    }
}

fn decode<M: prost::Message + Default>(body: &[u8]) -> Result<M, TransportError> {
    frame::decode(body).map_err(|e| TransportError::Protocol(e.to_string()))
}

#[async_trait(?Send)]
impl Link for WsLink {
    async fn request(&self, body: request::Body) -> Result<response::Body, TransportError> {
        let (id, mut rx) = self.open_stream()?;
        self.send(id, &ws::encode(id, &Request { body: Some(body) }))?;
        self.send(id, &ws::fin(id))?;
        let answer = crate::runtime::timeout(REQUEST_TIMEOUT, rx.recv()).await;
        self.shared.routes.borrow_mut().remove(&id);
        let Some(message) = answer else {
            return Err(TransportError::Disconnected("request timed out".into()));
        };
        let body = next_frame(message)?
            .ok_or_else(|| TransportError::Protocol("stream ended without a response".into()))?;
        into_result(decode(&body)?)
    }

    fn channel_binding(&self) -> Result<[u8; 32], TransportError> {
        Ok(ws::channel_binding())
    }

    async fn subscribe(&self) -> Result<Box<dyn Deliveries>, TransportError> {
        let (id, mut rx) = self.open_stream()?;
        let subscribe = Request { body: Some(request::Body::Subscribe(wire::Subscribe {})) };
        self.send(id, &ws::encode(id, &subscribe))?;
        let Some(first) = crate::runtime::timeout(REQUEST_TIMEOUT, rx.recv()).await else {
            self.shared.routes.borrow_mut().remove(&id);
            return Err(TransportError::Disconnected("subscribe timed out".into()));
        };
        let body = next_frame(first)?
            .ok_or_else(|| TransportError::Protocol("subscription ended at once".into()))?;
        match into_result(decode(&body)?)? {
            response::Body::Subscribed(_) => {
                Ok(Box::new(WsDeliveries { id, rx, socket: self.socket.clone() }))
            }
            _ => Err(TransportError::Protocol("expected Subscribed".into())),
        }
    }

    /// Also the heartbeat: while waiting, a `GetChallenge` (allowed in every state, answered
    /// from memory) goes out every [`HEARTBEAT`]; no answer in time closes the link.
    async fn closed(&self) -> TransportError {
        let mut closed = self.shared.closed.subscribe();
        loop {
            if let Some(why) = closed.borrow_and_update().clone() {
                return TransportError::Disconnected(why);
            }
            let heartbeat = async {
                crate::runtime::sleep(HEARTBEAT).await;
                let ping = request::Body::GetChallenge(wire::GetChallenge {});
                crate::runtime::timeout(HEARTBEAT_TIMEOUT, self.request(ping)).await
            };
            tokio::select! {
                _ = closed.changed() => {}
                answer = heartbeat => match answer {
                    // Any answer, even a refusal (rate limited, say), shows the path is alive.
                    Some(Ok(_)) | Some(Err(TransportError::Relay(_))) => {}
                    Some(Err(e)) => {
                        self.close();
                        return e;
                    }
                    None => {
                        self.close();
                        return TransportError::Disconnected("heartbeat timed out".into());
                    }
                },
            }
        }
    }

    fn close(&self) {
        let _ = self.socket.close_with_code(1000);
        self.shared.close("closed by the client".into());
    }
}

struct WsDeliveries {
    id: u32,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    socket: WebSocket,
}

impl WsDeliveries {
    fn push(message: Option<Vec<u8>>) -> Result<Option<server_push::Body>, TransportError> {
        match next_frame(message)? {
            None => Ok(None),
            Some(body) => decode::<ServerPush>(&body)?
                .body
                .map(Some)
                .ok_or_else(|| TransportError::Protocol("empty push".into())),
        }
    }
}

#[async_trait(?Send)]
impl Deliveries for WsDeliveries {
    async fn next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
        Self::push(self.rx.recv().await)
    }

    async fn try_next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
        match self.rx.try_recv() {
            Ok(m) => Self::push(Some(m)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Self::push(None),
        }
    }

    async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), TransportError> {
        let bytes = ws::encode(self.id, &wire::ClientPush { acks: seqs });
        self.socket
            .send_with_u8_array(&bytes)
            .map_err(|e| TransportError::Disconnected(js_error(&e)))
    }
}
