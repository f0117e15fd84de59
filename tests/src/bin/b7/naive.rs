//! The peer of B7: the hub a team writes from tokio's and axum's documentation, over the same
//! in-memory transport.
//!
//! One `tokio::sync::broadcast` channel of `String` per account (in a `RwLock<HashMap>`,
//! created by the account's first connection) and one for the campaign; a publish serializes
//! its own `#[derive(Serialize)]` struct with `serde_json` and sends the `String` (every
//! receiver clones it). Each connection is served as `tests/src/bin/naive_axum.rs` serves a
//! socket: the docs' split into a send task (the broadcast receiver and a ping interval, one
//! `send`, a flush, per event) and a receive task (pongs). A receiver more than the channel's
//! capacity behind skips events (`Lagged`), which B7 counts as missing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use misar_proto::close::{CloseCode, CloseFrame};
use misar_proto::message::{Incoming, Message};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::transport::ServerEnd;

/// An inbox event as the naive server defines it.
#[derive(Serialize)]
pub struct NaiveEmail<'a> {
    /// Always `email_received`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `from`.
    pub from: &'a str,
    /// `subject`.
    pub subject: &'a str,
    /// `receivedAt`.
    #[serde(rename = "receivedAt")]
    pub received_at: &'a str,
    /// `messageId`.
    #[serde(rename = "messageId")]
    pub message_id: String,
}

/// A campaign `progress` event as the naive server defines it.
#[derive(Serialize)]
pub struct NaiveProgress<'a> {
    /// Always `progress`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `campaignId`.
    #[serde(rename = "campaignId")]
    pub campaign_id: &'a str,
    /// `sent`.
    pub sent: u64,
    /// `total`.
    pub total: u64,
    /// `delivered`.
    pub delivered: u64,
    /// `bounced`.
    pub bounced: u64,
    /// `opened`.
    pub opened: u64,
}

/// Which channel a naive connection receives.
pub enum NaiveChannel<'a> {
    /// The inbox of this account.
    Inbox(&'a str),
    /// The campaign.
    Campaign,
}

/// The naive hub.
pub struct NaiveHub {
    inboxes: RwLock<HashMap<String, broadcast::Sender<String>>>,
    campaign: broadcast::Sender<String>,
    capacity: usize,
    ping: Duration,
}

impl NaiveHub {
    /// Channels of `capacity` events; a ping every `ping`.
    pub fn new(capacity: usize, ping: Duration) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            inboxes: RwLock::new(HashMap::new()),
            campaign: broadcast::channel(capacity).0,
            capacity,
            ping: ping.max(Duration::from_millis(1)),
        })
    }

    /// Subscribes a connection and spawns its handler.
    pub fn connect(&self, channel: NaiveChannel<'_>, socket: ServerEnd) {
        let rx = match channel {
            NaiveChannel::Inbox(account) => self
                .inboxes
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(account.to_owned())
                .or_insert_with(|| broadcast::channel(self.capacity).0)
                .subscribe(),
            NaiveChannel::Campaign => self.campaign.subscribe(),
        };
        tokio::spawn(handle_socket(socket, rx, self.ping));
    }

    /// Publishes to an account's inbox; the receivers it reached.
    pub fn publish_inbox(&self, account: &str, event: &NaiveEmail<'_>) -> usize {
        let Ok(json) = serde_json::to_string(event) else {
            return 0;
        };
        let inboxes = self
            .inboxes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inboxes.get(account) {
            // An error only means nobody is subscribed.
            Some(tx) => tx.send(json).unwrap_or(0),
            None => 0,
        }
    }

    /// Publishes to the campaign; the receivers it reached.
    pub fn publish_campaign(&self, event: &NaiveProgress<'_>) -> usize {
        match serde_json::to_string(event) {
            Ok(json) => self.campaign.send(json).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Connections subscribed now.
    pub fn connection_count(&self) -> usize {
        let inboxes = self
            .inboxes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inboxes
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum::<usize>()
            + self.campaign.receiver_count()
    }
}

/// `naive_axum`'s `handle_socket`, over the in-memory transport.
async fn handle_socket(socket: ServerEnd, mut rx: broadcast::Receiver<String>, ping: Duration) {
    let (mut sender, mut receiver) = socket.split();
    let pong_seen = Arc::new(AtomicBool::new(true));
    let pong_seen_rx = Arc::clone(&pong_seen);

    let mut send_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ping);
        ticker.tick().await; // the first tick is immediate; ping one interval from now
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(text) => {
                        if sender.send(Message::Text(Bytes::from(text))).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick() => {
                    if !pong_seen.swap(false, Ordering::Relaxed) {
                        let close = CloseFrame::new(CloseCode::GoingAway);
                        let _ = sender.send(Message::Close(Some(close))).await;
                        break;
                    }
                    if sender.send(Message::Ping(Bytes::new())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = receiver.next().await {
            if let Incoming::Pong(_) = msg {
                pong_seen_rx.store(true, Ordering::Relaxed);
            }
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}
