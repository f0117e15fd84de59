//! A loopback TCP proxy between clients and the server, to break the network under a live
//! connection: [`Proxy::blackhole`] makes every current connection silent in both directions
//! while its sockets stay open (a pulled cable, a NAT entry that expired: half-open TCP on both
//! ends); [`Proxy::sever`] drops them (the peers see EOF or a reset, never a close frame).
//! Connections made afterwards are forwarded normally.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Stop forwarding; keep the sockets.
    Blackhole,
    /// Drop the sockets.
    Sever,
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// A generation number and what happens to connections of older generations.
    cut: watch::Sender<(u64, Option<Cut>)>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (cut, _) = watch::channel((0u64, None));
        let (stop, _) = watch::channel(false);
        let accept = tokio::spawn({
            let cut = cut.clone();
            let stop = stop.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    tokio::spawn(forward(client, server, cut.subscribe(), stop.subscribe()));
                }
            }
        });
        Proxy {
            addr,
            cut,
            stop,
            accept,
        }
    }

    /// Every connection open now goes silent both ways; its sockets stay open.
    pub fn blackhole(&self) {
        self.cut_existing(Cut::Blackhole);
    }

    /// Every connection open now is dropped without a close frame.
    pub fn sever(&self) {
        self.cut_existing(Cut::Sever);
    }

    fn cut_existing(&self, how: Cut) {
        self.cut.send_modify(|(generation, cut)| {
            *generation += 1;
            *cut = Some(how);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Black-holed connections hold their sockets until this.
        self.stop.send_replace(true);
    }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    mut cut: watch::Receiver<(u64, Option<Cut>)>,
    mut stop: watch::Receiver<bool>,
) {
    let born = cut.borrow_and_update().0;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = vec![0u8; 16 << 10];
    let mut down = vec![0u8; 16 << 10];
    let how = loop {
        tokio::select! {
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
                let (generation, how) = *cut.borrow_and_update();
                if generation > born {
                    break how;
                }
            }
            _ = stop.changed() => return,
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    };
    if how == Some(Cut::Blackhole) {
        // Nothing is read or written any more; the sockets live until the proxy is dropped.
        let _held = (client_read, client_write, server_read, server_write);
        let _ = stop.wait_for(|stopped| *stopped).await;
    }
}
