//! The WebSocket listener (docs/PROTOCOL.md §14.15): the same requests, auth, deliveries and
//! typed errors as QUIC, over WebSocket with TLS (pinned) and without (`--ws-tls false`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hush_protocol::websocket::{self as ws, WsMessage};
use hush_protocol::wire::{self, Response, ServerPush, request, response, server_push};
use hush_protocol::{ErrorCode, auth, frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

/// A raw WebSocket client speaking the relay protocol.
struct WsClient<S> {
    socket: WebSocketStream<S>,
    next_stream: u32,
}

async fn connect_tls(relay: &Relay) -> WsClient<impl AsyncRead + AsyncWrite + Unpin> {
    let tls = hush_net::pinned_tls_config(relay.pin, b"http/1.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(relay.ws).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut req = format!("wss://{}/", relay.ws).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", ws::SUBPROTOCOL.parse().unwrap());
    let (socket, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], ws::SUBPROTOCOL);
    WsClient { socket, next_stream: 1 }
}

async fn connect_plain(
    relay: &Relay,
    subprotocol: bool,
) -> Result<WsClient<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(relay.ws).await.unwrap();
    let mut req = format!("ws://{}/", relay.ws).into_client_request().unwrap();
    if subprotocol {
        req.headers_mut().insert("sec-websocket-protocol", ws::SUBPROTOCOL.parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::client_async(req, tcp).await.map_err(|e| e.to_string())?;
    Ok(WsClient { socket, next_stream: 1 })
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    fn open(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 1;
        id
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.socket.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next binary message (skipping pings).
    async fn recv_raw(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Binary(b)) => return Some(b.to_vec()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// One request on a new stream; returns the response (and checks the stream then ends).
    async fn request(&mut self, body: request::Body) -> Result<response::Body, ErrorCode> {
        let id = self.open();
        self.send_raw(ws::encode(id, &wire::Request { body: Some(body) })).await;
        self.send_raw(ws::fin(id)).await;
        self.response_on(id).await
    }

    async fn response_on(&mut self, id: u32) -> Result<response::Body, ErrorCode> {
        let m = self.recv_raw().await.expect("response");
        let WsMessage::Frame { stream, body } = ws::decode(&m, frame::MAX_FRAME_LEN).unwrap()
        else {
            panic!("expected a frame")
        };
        assert_eq!(stream, id);
        let resp: Response = frame::decode(body).unwrap();
        let fin = self.recv_raw().await.expect("fin");
        assert_eq!(ws::decode(&fin, 0).unwrap(), WsMessage::Fin { stream: id });
        match resp.body.unwrap() {
            response::Body::Error(e) => Err(ErrorCode::parse(&e.code).unwrap()),
            other => Ok(other),
        }
    }

    async fn login(&mut self, user: &User, device: u32) {
        let Ok(response::Body::Challenge(c)) =
            self.request(request::Body::GetChallenge(wire::GetChallenge {})).await
        else {
            panic!("challenge")
        };
        let nonce: [u8; 32] = c.nonce.try_into().unwrap();
        let t = auth::transcript(&nonce, &ws::channel_binding(), user.key().as_bytes(), device);
        let sig = user.device(device).identity.sign(&t);
        let r = self
            .request(request::Body::Authenticate(wire::Authenticate {
                account: user.key().as_bytes().to_vec(),
                device_id: device,
                signature: sig.to_vec(),
            }))
            .await;
        assert!(matches!(r, Ok(response::Body::Authenticated(_))), "{r:?}");
    }

    /// Subscribes on a new stream: `Subscribed`, then (an empty mailbox) `QueueEmpty`.
    async fn subscribe(&mut self) -> u32 {
        let sub = self.open();
        let req = wire::Request { body: Some(request::Body::Subscribe(wire::Subscribe {})) };
        self.send_raw(ws::encode(sub, &req)).await;
        let m = self.recv_raw().await.unwrap();
        let WsMessage::Frame { body, .. } = ws::decode(&m, 1 << 20).unwrap() else { panic!() };
        assert!(matches!(
            frame::decode::<Response>(body).unwrap().body,
            Some(response::Body::Subscribed(_))
        ));
        assert!(matches!(self.push(sub).await, server_push::Body::QueueEmpty(_)));
        sub
    }

    async fn push(&mut self, id: u32) -> server_push::Body {
        let m = self.recv_raw().await.expect("push");
        let WsMessage::Frame { stream, body } = ws::decode(&m, frame::MAX_FRAME_LEN).unwrap()
        else {
            panic!("expected a push frame")
        };
        assert_eq!(stream, id);
        frame::decode::<ServerPush>(body).unwrap().body.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_style_client_registers_authenticates_and_receives_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut bob = User::new(1);
    let mut alice = User::new(1);

    // Bob lives on WebSocket only: register, authenticate, subscribe.
    let mut b = connect_tls(&relay).await;
    let list = bob.next_list();
    let r = b
        .request(request::Body::Register(wire::Register { device_list: list.encoded().to_vec() }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    // Before auth, only registration.
    assert_eq!(
        b.request(request::Body::GetPrekeyCounts(wire::GetPrekeyCounts {})).await.unwrap_err(),
        ErrorCode::NotAuthenticated
    );
    b.login(&bob, 1).await;
    let sub = b.subscribe().await;

    // Alice on QUIC sends; Bob gets it pushed on his WebSocket subscription and acks it.
    let a = relay.connect().await;
    alice.register(&a).await;
    a.authenticate(&alice.key(), 1, &alice.device(1).identity).await.unwrap();
    a.send(send_to(&bob, b"over websocket")).await.unwrap();
    let server_push::Body::Delivery(d) = b.push(sub).await else { panic!("delivery") };
    assert_eq!(d.payload, b"over websocket");
    assert_eq!(d.sender_account, alice.key().as_bytes().to_vec());
    b.send_raw(ws::encode(sub, &wire::ClientPush { acks: vec![d.seq] })).await;
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 1).await;

    // And back: Bob sends over WebSocket, Alice (QUIC) receives.
    let mut a_sub = a.subscribe().await.unwrap();
    assert!(drain(&mut a_sub).await.is_empty());
    let r = b.request(request::Body::Send(send_to(&alice, b"reply"))).await;
    assert!(matches!(r, Ok(response::Body::Sent(_))), "{r:?}");
    assert_eq!(next_delivery(&mut a_sub).await.payload, b"reply");
}

/// A browser uploads an attachment blob over WebSocket in puts; a QUIC client downloads it.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_uploaded_over_websocket_downloads_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut web = User::new(1);
    let mut native = User::new(1);
    let mut w = connect_tls(&relay).await;
    let list = web.next_list();
    let r = w
        .request(request::Body::Register(wire::Register { device_list: list.encoded().to_vec() }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    w.login(&web, 1).await;

    let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let r = w.request(request::Body::BlobCreate(wire::BlobCreate { size: bytes.len() as u64 }));
    let Ok(response::Body::BlobCreated(created)) = r.await else { panic!("created") };
    let put = created.max_put as usize;
    for (i, piece) in bytes.chunks(put).enumerate() {
        let body = request::Body::BlobPut(wire::BlobPut {
            blob_id: created.blob_id.clone(),
            offset: (i * put) as u64,
            data: piece.to_vec(),
        });
        let Ok(response::Body::BlobProgress(p)) = w.request(body).await else { panic!("put") };
        assert_eq!(p.committed, (i * put + piece.len()) as u64);
    }

    let n = relay.connect().await;
    native.register(&n).await;
    n.authenticate(&native.key(), 1, &native.device(1).identity).await.unwrap();
    let mut got = Vec::new();
    while got.len() < bytes.len() {
        got.extend(n.blob_get(&created.blob_id, got.len() as u64, 1 << 20).await.unwrap().data);
    }
    assert_eq!(got, bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_over_websocket_gets_the_same_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start(dir.path(), &[("ws-tls", "false"), ("max-streams-per-connection", "1")]);
    let mut user = User::new(1);

    // No subprotocol: refused in the handshake.
    let err = connect_plain(&relay, false).await.err().expect("refused");
    assert!(err.contains("400"), "{err}");

    let mut c = connect_plain(&relay, true).await.unwrap();
    // A body that is not a Request.
    let id = c.open();
    c.send_raw([id.to_be_bytes().to_vec(), vec![0, 0, 0, 2, 0xff, 0xff]].concat()).await;
    assert_eq!(c.response_on(id).await.unwrap_err(), ErrorCode::MalformedFrame);
    // A length prefix that disagrees with the message.
    let id = c.open();
    c.send_raw([id.to_be_bytes().to_vec(), vec![0, 0, 0, 9, 1]].concat()).await;
    assert_eq!(c.response_on(id).await.unwrap_err(), ErrorCode::MalformedFrame);
    // Over the pre-auth limit (64 KiB).
    let id = c.open();
    c.send_raw(
        [id.to_be_bytes().to_vec(), (70_000u32).to_be_bytes().to_vec(), vec![0; 70_000]].concat(),
    )
    .await;
    assert_eq!(c.response_on(id).await.unwrap_err(), ErrorCode::FrameTooLarge);
    // An empty stream.
    let id = c.open();
    c.send_raw(ws::fin(id)).await;
    assert_eq!(c.response_on(id).await.unwrap_err(), ErrorCode::MalformedFrame);

    // A signature over the QUIC-style binding (or any other) fails.
    let r = c
        .request(request::Body::Register(wire::Register {
            device_list: user.next_list().encoded().to_vec(),
        }))
        .await;
    assert!(r.is_ok());
    let Ok(response::Body::Challenge(ch)) =
        c.request(request::Body::GetChallenge(wire::GetChallenge {})).await
    else {
        panic!()
    };
    let nonce: [u8; 32] = ch.nonce.try_into().unwrap();
    let t = auth::transcript(&nonce, &[0u8; 32], user.key().as_bytes(), 1);
    let auth = request::Body::Authenticate(wire::Authenticate {
        account: user.key().as_bytes().to_vec(),
        device_id: 1,
        signature: user.device(1).identity.sign(&t).to_vec(),
    });
    assert_eq!(c.request(auth.clone()).await.unwrap_err(), ErrorCode::BadSignature);
    // The nonce was consumed: the same request again is a replay.
    assert_eq!(c.request(auth).await.unwrap_err(), ErrorCode::ReplayedNonce);

    // Stream limit (1 here): a live subscription holds the only slot, so a request on another
    // stream is refused on that stream.
    c.login(&user, 1).await;
    c.subscribe().await;
    assert_eq!(
        c.request(request::Body::GetChallenge(wire::GetChallenge {})).await.unwrap_err(),
        ErrorCode::BadRequest
    );

    // A text message ends the connection with close code 4000 + PROTOCOL_VIOLATION.
    c.socket.send(Message::Text("hello".into())).await.unwrap();
    let close = loop {
        match c.socket.next().await {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        u16::from(close.unwrap().code),
        4000 + hush_protocol::close::PROTOCOL_VIOLATION as u16
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limits_apply_before_the_websocket_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("ws-tls", "false"), ("connections-per-ip", "1")]);
    let first = connect_plain(&relay, true).await.unwrap();
    // Over the per-IP limit the TCP connection is closed before any handshake.
    assert!(connect_plain(&relay, true).await.is_err());
    drop(first);
    // The slot comes back once the relay has seen the first connection go.
    let mut again = None;
    for _ in 0..100 {
        if let Ok(c) = connect_plain(&relay, true).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut again = again.expect("a freed slot is reusable");
    assert!(matches!(
        again.request(request::Body::GetChallenge(wire::GetChallenge {})).await,
        Ok(response::Body::Challenge(_))
    ));
}
