//! A minimal raw HTTP/2 client for the gRPC abuse tests: it speaks just
//! enough HTTP/2 (RFC 9113) to do what a real gRPC client never does: set
//! its stream window to 0 so no reply can be delivered, open streams and
//! never finish their message, send `grpc-encoding: gzip` bodies. Written
//! here rather than driven through a Python HTTP/2 library so the tests
//! need nothing beyond the Rust toolchain and start no extra process: the
//! connections are this test's own sockets, closed when it drops them.
//!
//! Header blocks use HPACK literals without indexing and without Huffman
//! (RFC 7541 §6.2.2), which every decoder must accept. What the server
//! sends back is read and dropped by one thread per connection, which
//! acknowledges PINGs (so keepalive never closes us) and, only when asked,
//! SETTINGS: a client that never acknowledges the server's SETTINGS keeps
//! gRPC core 1.56 from applying them to it (its MAX_CONCURRENT_STREAMS
//! among them), so the worst-case attacker does not.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One attacker connection on the plugin's socket.
pub struct H2Conn {
    sock: UnixStream,
    next_id: u32,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

fn header_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    let base = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    for (k, v) in base.iter().chain(extra.iter()) {
        b.push(0x00); // literal without indexing, new name
        hpack_int(&mut b, 0, 7, k.len());
        b.extend_from_slice(k.as_bytes());
        hpack_int(&mut b, 0, 7, v.len());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// A gRPC length-prefixed message (uncompressed unless `compressed`).
pub fn grpc_frame(msg: &[u8], compressed: bool, claimed_len: Option<u32>) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&claimed_len.unwrap_or(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

impl H2Conn {
    /// Connects, sends the preface and SETTINGS with `initial_window` as
    /// the stream window the server may use towards us.
    pub fn connect(socket: &Path, initial_window: u32, ack_settings: bool) -> std::io::Result<H2Conn> {
        let mut sock = UnixStream::connect(socket)?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut s = Vec::from(PREFACE);
        let mut settings = SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
        settings.extend_from_slice(&initial_window.to_be_bytes());
        s.extend(frame(SETTINGS, 0, 0, &settings));
        sock.write_all(&s)?;
        let mut rd = sock.try_clone()?;
        let mut wr = sock.try_clone()?;
        let reader = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let mut head = [0u8; 9];
            let mut payload = Vec::new();
            while rd.read_exact(&mut head).is_ok() {
                let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
                payload.resize(len, 0);
                if rd.read_exact(&mut payload).is_err() {
                    return;
                }
                let (ty, flags) = (head[3], head[4]);
                let reply = match ty {
                    SETTINGS if flags & ACK == 0 && ack_settings => frame(SETTINGS, ACK, 0, &[]),
                    PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
                    _ => continue,
                };
                if wr.write_all(&reply).is_err() {
                    return;
                }
            }
        })?;
        Ok(H2Conn {
            sock,
            next_id: 1,
            reader: Some(reader),
        })
    }

    /// Opens a stream on `path` with `extra` headers, then sends `body`
    /// (if any) and ends the stream when `end`. Returns the stream id.
    pub fn call(&mut self, path: &str, extra: &[(&str, &str)], body: Option<&[u8]>, end: bool) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 2;
        let hflags = END_HEADERS | if body.is_none() && end { END_STREAM } else { 0 };
        let mut out = frame(HEADERS, hflags, id, &header_block(path, extra));
        if let Some(b) = body {
            // Max frame size is 16 KiB until the server says otherwise.
            let mut chunks = b.chunks(16 * 1024).peekable();
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                out.extend(frame(DATA, if last && end { END_STREAM } else { 0 }, id, c));
            }
        }
        self.sock.write_all(&out)?;
        Ok(id)
    }
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
