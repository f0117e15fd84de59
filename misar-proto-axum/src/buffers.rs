//! WebSocket buffer sizes: small by default, so many idle connections cost little memory.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Buffer and size limits applied to every upgraded socket.
///
/// tungstenite's defaults allocate a 128 KiB read buffer per connection and never bound the
/// write buffer; these defaults keep an idle connection to a few KiB:
///
/// | field | default | what it bounds |
/// |---|---|---|
/// | `read_buffer_size` | 256 B | the read buffer, and the most read per system call (a larger inbound frame grows it to the frame's size) |
/// | `write_buffer_size` | 64 KiB | outbound bytes gathered into one write to the socket; the buffer is released once flushed, so an idle connection holds none |
/// | `max_write_buffer_size` | 4 KiB + 64 KiB + 16 | outbound frames held beyond that when the socket does not take them; a larger outbound event cannot be sent |
/// | `max_message_size` | 64 KiB | an inbound message (the session closes with 1009 far below, at 4 KiB) |
/// | `max_frame_size` | 64 KiB | an inbound frame |
///
/// The read buffer is small because the protocol is server-push: a client sends pongs and its
/// close frame (a few bytes each) and rarely anything else, and every connection keeps its read
/// buffer for its whole life. Writes are gathered by a
/// [`WriteCoalescer`](misar_proto_tokio::server::WriteCoalescer), which frees its buffer at
/// every flush, so the write buffer costs memory only while a batch is being written.
///
/// ```
/// use misar_proto_axum::WsBuffers;
/// let buffers = WsBuffers { read_buffer_size: 8 << 10, ..WsBuffers::default() };
/// assert_eq!(buffers.max_message_size, 64 << 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsBuffers {
    /// Initial capacity of the read buffer, and the most bytes read per system call.
    pub read_buffer_size: usize,
    /// Outbound bytes gathered before they are written to the socket (0: write each frame at
    /// once). A flush always writes everything, and releases the buffer.
    pub write_buffer_size: usize,
    /// The most outbound bytes held, beyond `write_buffer_size`, when the socket does not take
    /// them (at least 1); a frame larger than this cannot be sent.
    pub max_write_buffer_size: usize,
    /// Largest inbound message.
    pub max_message_size: usize,
    /// Largest inbound frame.
    pub max_frame_size: usize,
}

impl Default for WsBuffers {
    fn default() -> Self {
        Self {
            read_buffer_size: 256,
            write_buffer_size: 64 << 10,
            max_write_buffer_size: (4 << 10) + (64 << 10) + 16,
            max_message_size: 64 << 10,
            max_frame_size: 64 << 10,
        }
    }
}

impl WsBuffers {
    /// tungstenite's configuration: its own write buffer is off (0), since the
    /// `WriteCoalescer` under it gathers the writes.
    pub(crate) fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(0)
            // tungstenite panics when the maximum is not above the target (0).
            .max_write_buffer_size(self.max_write_buffer_size.max(1))
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_library_does_not_buffer_writes_itself() {
        let config = WsBuffers::default().config();
        assert_eq!(config.write_buffer_size, 0);
        assert_eq!(config.read_buffer_size, 256);
        assert_eq!(config.max_message_size, Some(64 << 10));
        let zero = WsBuffers {
            max_write_buffer_size: 0,
            ..WsBuffers::default()
        };
        assert_eq!(zero.config().max_write_buffer_size, 1);
    }
}
