//! `serve_connection` over real loopback sockets and an in-memory transport.

#[path = "server_support.rs"]
mod support;

use support::*;

#[tokio::test]
async fn smoke() {
    let hub = misar_proto_tokio::hub::Hub::new(Default::default());
    let mut server = TestServer::start(hub.clone(), Default::default(), Default::default()).await;
    let mut client = connect(server.addr, "/mail/ws/inbox", "a1").await;
    let event = email(1, 0);
    let report = hub.publish_inbox(&account("a1"), &event).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(next_text(&mut client).await, inbox_text(&event));
    close(&mut client).await;
    let end = server.next_end().await;
    println!("{end:?}");
}
