//! Encoding: compact JSON written straight into one buffer, `type` first.
//!
//! Each event is walked twice by the same generic writer: once into a [`Len`] that adds up the
//! size (strings counted unescaped, so a string with escapes costs one regrowth), once into the
//! `Vec` reserved to that size. The buffer then becomes [`Bytes`] without a copy, and usually
//! without spare capacity that would be held for as long as the event sits in queues.

use bytes::Bytes;

use super::{
    Bounce, BounceType, CampaignCompleted, CampaignEvent, CampaignStarted, Cancelled, Complaint,
    Completed, EmailReceived, EncodedEvent, Event, Failed, InboxEvent, Progress, Timestamp,
    UnknownEvent, Unsubscribe,
};
use crate::route::CampaignId;

/// Where a writer puts JSON: a buffer, or a size counter.
pub(super) trait Sink {
    /// Bytes that need no escaping (punctuation, keys, type names).
    fn raw(&mut self, bytes: &[u8]);
    /// A JSON string with escaping.
    fn string(&mut self, s: &str);
    /// A JSON string known to need no escaping (validated timestamps and campaign ids).
    fn plain_string(&mut self, s: &str);
    /// An unsigned integer.
    fn count(&mut self, v: u64);
}

/// Adds up the encoded length (an estimate for strings that need escaping).
pub(super) struct Len(pub(super) usize);

impl Sink for Len {
    fn raw(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
    fn string(&mut self, s: &str) {
        self.0 = self.0.saturating_add(s.len()).saturating_add(2);
    }
    fn plain_string(&mut self, s: &str) {
        self.string(s);
    }
    fn count(&mut self, v: u64) {
        let digits = v.checked_ilog10().map_or(1, |d| d as usize + 1);
        self.0 = self.0.saturating_add(digits);
    }
}

impl Sink for Vec<u8> {
    fn raw(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn string(&mut self, s: &str) {
        write_escaped(self, s);
    }
    fn plain_string(&mut self, s: &str) {
        self.push(b'"');
        self.extend_from_slice(s.as_bytes());
        self.push(b'"');
    }
    fn count(&mut self, v: u64) {
        write_u64(self, v);
    }
}

/// Whether JSON requires `b` to be escaped inside a string (RFC 8259 §7). Everything else,
/// including all non-ASCII UTF-8, is written as is.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(pos) = rest.iter().position(|&b| needs_escape(b)) {
        // `pos` is an index into `rest`, so both splits succeed; `else` only keeps this
        // panic-free by construction.
        let Some((run, tail)) = rest.split_at_checked(pos) else {
            break;
        };
        let Some((&b, after)) = tail.split_first() else {
            break;
        };
        out.extend_from_slice(run);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                let hi = HEX[usize::from(b >> 4)];
                let lo = HEX[usize::from(b & 0xf)];
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
            }
        }
        rest = after;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    // u64::MAX has 20 digits.
    let mut buf = [0u8; 20];
    let mut used = 0;
    for slot in buf.iter_mut().rev() {
        // `v % 10` < 10, so the cast is lossless.
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
        used += 1;
        if v == 0 {
            break;
        }
    }
    let start = buf.len().saturating_sub(used);
    out.extend_from_slice(buf.get(start..).unwrap_or_default());
}

fn opt_string<S: Sink>(s: &mut S, key: &[u8], value: Option<&String>) {
    if let Some(v) = value {
        s.raw(key);
        s.string(v);
    }
}

/// An optional `campaignId` (campaign ids are `[A-Za-z0-9_-]`: nothing to escape).
fn opt_campaign<S: Sink>(s: &mut S, value: Option<&CampaignId>) {
    if let Some(v) = value {
        s.raw(br#","campaignId":"#);
        s.plain_string(v.as_str());
    }
}

fn opt_count<S: Sink>(s: &mut S, key: &[u8], value: Option<u64>) {
    if let Some(v) = value {
        s.raw(key);
        s.count(v);
    }
}

fn opt_time<S: Sink>(s: &mut S, key: &[u8], value: Option<&Timestamp>) {
    if let Some(v) = value {
        s.raw(key);
        s.plain_string(v.as_str());
    }
}

impl EmailReceived {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"email_received","from":"#);
        s.string(&self.from);
        s.raw(br#","subject":"#);
        s.string(&self.subject);
        s.raw(br#","receivedAt":"#);
        s.plain_string(self.received_at.as_str());
        opt_string(s, br#","messageId":"#, self.message_id.as_ref());
        opt_string(s, br#","to":"#, self.to.as_ref());
        s.raw(b"}");
    }
}

impl Bounce {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"bounce","email":"#);
        s.string(&self.email);
        if let Some(bt) = &self.bounce_type {
            s.raw(br#","bounceType":"#);
            s.string(bt.as_str());
        }
        opt_string(s, br#","reason":"#, self.reason.as_ref());
        opt_campaign(s, self.campaign_id.as_ref());
        s.raw(br#","bouncedAt":"#);
        s.plain_string(self.bounced_at.as_str());
        s.raw(b"}");
    }
}

impl Complaint {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"complaint","email":"#);
        s.string(&self.email);
        opt_campaign(s, self.campaign_id.as_ref());
        s.raw(br#","complainedAt":"#);
        s.plain_string(self.complained_at.as_str());
        s.raw(b"}");
    }
}

impl Unsubscribe {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"unsubscribe","email":"#);
        s.string(&self.email);
        opt_campaign(s, self.campaign_id.as_ref());
        s.raw(br#","unsubscribedAt":"#);
        s.plain_string(self.unsubscribed_at.as_str());
        s.raw(b"}");
    }
}

impl CampaignStarted {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"campaign_started","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        s.raw(br#","campaignName":"#);
        s.string(&self.campaign_name);
        s.raw(br#","total":"#);
        s.count(self.total);
        s.raw(br#","startedAt":"#);
        s.plain_string(self.started_at.as_str());
        s.raw(b"}");
    }
}

impl CampaignCompleted {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"campaign_completed","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        s.raw(br#","campaignName":"#);
        s.string(&self.campaign_name);
        s.raw(br#","sent":"#);
        s.count(self.sent);
        s.raw(br#","delivered":"#);
        s.count(self.delivered);
        s.raw(br#","opened":"#);
        s.count(self.opened);
        s.raw(br#","completedAt":"#);
        s.plain_string(self.completed_at.as_str());
        s.raw(b"}");
    }
}

impl Progress {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"progress","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        s.raw(br#","sent":"#);
        s.count(self.sent);
        s.raw(br#","total":"#);
        s.count(self.total);
        s.raw(br#","delivered":"#);
        s.count(self.delivered);
        s.raw(br#","bounced":"#);
        s.count(self.bounced);
        s.raw(br#","opened":"#);
        s.count(self.opened);
        s.raw(b"}");
    }
}

impl Completed {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"completed","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        s.raw(br#","sent":"#);
        s.count(self.sent);
        s.raw(br#","delivered":"#);
        s.count(self.delivered);
        s.raw(br#","bounced":"#);
        s.count(self.bounced);
        s.raw(br#","opened":"#);
        s.count(self.opened);
        opt_time(s, br#","completedAt":"#, self.completed_at.as_ref());
        s.raw(b"}");
    }
}

impl Failed {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"failed","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        s.raw(br#","error":"#);
        s.string(&self.error);
        opt_count(s, br#","sent":"#, self.sent);
        opt_time(s, br#","failedAt":"#, self.failed_at.as_ref());
        s.raw(b"}");
    }
}

impl Cancelled {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(br#"{"type":"cancelled","campaignId":"#);
        s.plain_string(self.campaign_id.as_str());
        opt_count(s, br#","sent":"#, self.sent);
        opt_time(s, br#","cancelledAt":"#, self.cancelled_at.as_ref());
        s.raw(b"}");
    }
}

impl UnknownEvent {
    fn write<S: Sink>(&self, s: &mut S) {
        s.raw(&self.raw);
    }
}

impl InboxEvent {
    pub(super) fn write<S: Sink>(&self, s: &mut S) {
        match self {
            InboxEvent::EmailReceived(e) => e.write(s),
            InboxEvent::Bounce(e) => e.write(s),
            InboxEvent::Complaint(e) => e.write(s),
            InboxEvent::Unsubscribe(e) => e.write(s),
            InboxEvent::CampaignStarted(e) => e.write(s),
            InboxEvent::CampaignCompleted(e) => e.write(s),
            InboxEvent::Unknown(e) => e.write(s),
        }
    }
}

impl CampaignEvent {
    pub(super) fn write<S: Sink>(&self, s: &mut S) {
        match self {
            CampaignEvent::Progress(e) => e.write(s),
            CampaignEvent::Completed(e) => e.write(s),
            CampaignEvent::Failed(e) => e.write(s),
            CampaignEvent::Cancelled(e) => e.write(s),
            CampaignEvent::Unknown(e) => e.write(s),
        }
    }
}

impl Event {
    pub(super) fn write<S: Sink>(&self, s: &mut S) {
        match self {
            Event::Inbox(e) => e.write(s),
            Event::Campaign(e) => e.write(s),
        }
    }
}

impl BounceType {
    /// The wire value: `"hard"`, `"soft"`, or the other value as received.
    pub fn as_str(&self) -> &str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
            BounceType::Other(s) => s,
        }
    }
}

/// `encode` and `encode_into` for the three enums: size first, then write.
macro_rules! impl_encode {
    ($ty:ty) => {
        impl $ty {
            /// Encodes the event once into compact JSON (`type` first, camelCase fields,
            /// absent optional fields omitted; an unknown event's `raw` as is), ready to be
            /// shared by every connection it is sent to.
            pub fn encode(&self) -> EncodedEvent {
                let mut len = Len(0);
                self.write(&mut len);
                let mut buf = Vec::with_capacity(len.0);
                self.write(&mut buf);
                EncodedEvent::new(Bytes::from(buf), self.class())
            }

            /// Appends the same encoding as [`encode`](Self::encode) to `out` (for callers
            /// that batch or reuse buffers).
            pub fn encode_into(&self, out: &mut Vec<u8>) {
                let mut len = Len(0);
                self.write(&mut len);
                out.reserve(len.0);
                self.write(out);
            }
        }
    };
}

impl_encode!(InboxEvent);
impl_encode!(CampaignEvent);
impl_encode!(Event);

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut v = Vec::new();
        write_escaped(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "é ü 日本 🦀",
            "\u{2028}\u{2029}",
            "end\\",
            "\"",
        ] {
            let ours = esc(s);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), s);
        }
    }

    #[test]
    fn numbers() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
            let mut len = Len(0);
            len.count(v);
            assert_eq!(len.0, out.len(), "{v}");
        }
    }
}
