//! `misar_proto_axum::serve` as an HTTP server: request-head bound (431), `ConnectInfo`, any
//! axum `Listener` (a Unix socket here), graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use std::future::IntoFuture;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut socket: S,
    request: &[u8],
) -> String {
    socket.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

fn app() -> Router {
    Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    )
}

#[tokio::test]
async fn heads_are_bounded_and_handlers_get_the_peer_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        misar_proto_axum::serve(listener, app())
            .max_head_bytes(8 * 1024)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = exchange(
        socket,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("127.0.0.1"), "{answer}");

    let huge = format!(
        "GET /peer HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = exchange(socket, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn any_axum_listener_is_served() {
    let dir = std::env::temp_dir().join(format!("misar-serve-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let listener = tokio::net::UnixListener::bind(&dir).unwrap();
    let app = Router::new().route("/", get(|| async { "over a unix socket" }));
    let server = tokio::spawn(misar_proto_axum::serve(listener, app).into_future());
    let socket = tokio::net::UnixStream::connect(&dir).await.unwrap();
    let answer = exchange(
        socket,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("over a unix socket"), "{answer}");
    server.abort();
    let _ = std::fs::remove_file(&dir);
}
