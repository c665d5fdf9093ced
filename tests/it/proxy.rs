//! A loss proxy: a loopback TCP proxy in front of a hub that cuts a fraction of the
//! connections after a few bytes, either while the request goes up (the service never sees
//! it whole) or while the answer comes back (the service did the work and the client never
//! learns it: the ambiguous failure that must not make a declaration or a finalize twice).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct LossProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    listener: Option<TcpListener>,
    /// The fraction of new connections cut, as `f64` bits.
    ratio: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl LossProxy {
    /// Binds a port on 127.0.0.1, so a hub can be told its public address before the proxy
    /// forwards to it ([`LossProxy::forward`]).
    pub async fn bind() -> LossProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port for the proxy");
        LossProxy {
            addr: listener.local_addr().expect("a bound address"),
            listener: Some(listener),
            ratio: Arc::default(),
            cuts: Arc::default(),
            task: None,
        }
    }

    /// Forwards every connection to `upstream`, cutting the fraction it is told to
    /// ([`LossProxy::set_ratio`]; none at first) after at most `max_bytes` bytes (every other
    /// one on the way up, the others on the way back).
    pub fn forward(&mut self, upstream: SocketAddr, max_bytes: usize) {
        let listener = self.listener.take().expect("forward is called once");
        let cuts = self.cuts.clone();
        let ratio = self.ratio.clone();
        self.task = Some(tokio::spawn(async move {
            // Which connections are cut is spread evenly, not drawn: at 30 % the first one
            // after the ratio is set, then about every third, so a short test is cut for sure.
            // The direction alternates; the number of bytes let through is drawn.
            let (mut owed, mut cut_count, mut last_ratio) = (0.0f64, 0u64, 0.0f64);
            while let Ok((client, _)) = listener.accept().await {
                let ratio = f64::from_bits(ratio.load(Ordering::Relaxed));
                if ratio != last_ratio {
                    (owed, last_ratio) = (1.0 - ratio, ratio);
                }
                owed += ratio;
                let cut = ratio > 0.0 && owed >= 1.0;
                if cut {
                    owed -= 1.0;
                    cut_count += 1;
                }
                let upward = cut_count % 2 == 0;
                let after = rand::rng().random_range(1..=max_bytes);
                let cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let limit = cut.then_some(after);
                    let (up, down) = if upward { (limit, None) } else { (None, limit) };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let upward = pipe(client_read, server_write, up);
                    let downward = pipe(server_read, client_write, down);
                    tokio::pin!(upward, downward);
                    let (mut up_done, mut down_done) = (false, false);
                    while !(up_done && down_done) {
                        let cut = tokio::select! {
                            c = &mut upward, if !up_done => { up_done = true; c }
                            c = &mut downward, if !down_done => { down_done = true; c }
                        };
                        if cut {
                            cuts.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    // Every half is dropped here: a cut connection is gone both ways.
                });
            }
        }));
    }

    /// Cuts `ratio` (0 to 1) of the connections from now on.
    pub fn set_ratio(&self, ratio: f64) {
        self.ratio.store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for LossProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Copies `from` to `to` until the end, or until `limit` bytes have gone (then `true`: cut).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    limit: Option<usize>,
) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut left = limit.unwrap_or(usize::MAX);
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(n) => n,
        };
        let n_sent = n.min(left);
        if to.write_all(&buffer[..n_sent]).await.is_err() {
            return false;
        }
        left -= n_sent;
        if left == 0 {
            return true;
        }
    }
}
