//! WebSocket buffer sizes: small by default, so many idle connections cost little memory.

use axum::extract::ws::WebSocketUpgrade;

/// Buffer and size limits applied to every upgraded socket.
///
/// tungstenite's defaults allocate a 128 KiB read buffer per connection and never bound the
/// write buffer; these defaults keep an idle connection to a few KiB:
///
/// | field | default | what it bounds |
/// |---|---|---|
/// | `read_buffer_size` | 4 KiB | the read buffer (grows only for a frame larger than it) |
/// | `write_buffer_size` | 4 KiB | bytes gathered before a write to the socket |
/// | `max_write_buffer_size` | 4 KiB + 64 KiB + 16 | bytes held when the socket does not take them; a larger outbound event cannot be sent |
/// | `max_message_size` | 64 KiB | an inbound message (the session closes with 1009 far below, at 4 KiB) |
/// | `max_frame_size` | 64 KiB | an inbound frame |
///
/// ```
/// use misar_proto_axum::WsBuffers;
/// let buffers = WsBuffers { read_buffer_size: 8 << 10, ..WsBuffers::default() };
/// assert_eq!(buffers.max_message_size, 64 << 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsBuffers {
    /// Initial capacity of the read buffer.
    pub read_buffer_size: usize,
    /// Outbound bytes gathered before they are written to the socket (0: write each frame at
    /// once). A flush always writes everything.
    pub write_buffer_size: usize,
    /// The most outbound bytes held; raised to `write_buffer_size + 1` if set lower (the
    /// WebSocket library requires it).
    pub max_write_buffer_size: usize,
    /// Largest inbound message.
    pub max_message_size: usize,
    /// Largest inbound frame.
    pub max_frame_size: usize,
}

impl Default for WsBuffers {
    fn default() -> Self {
        Self {
            read_buffer_size: 4 << 10,
            write_buffer_size: 4 << 10,
            max_write_buffer_size: (4 << 10) + (64 << 10) + 16,
            max_message_size: 64 << 10,
            max_frame_size: 64 << 10,
        }
    }
}

impl WsBuffers {
    /// Applies the sizes to an upgrade.
    pub(crate) fn apply<F>(&self, upgrade: WebSocketUpgrade<F>) -> WebSocketUpgrade<F> {
        upgrade
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            // tungstenite panics when the maximum is not above the target.
            .max_write_buffer_size(
                self.max_write_buffer_size
                    .max(self.write_buffer_size.saturating_add(1)),
            )
            .max_message_size(self.max_message_size)
            .max_frame_size(self.max_frame_size)
    }
}
