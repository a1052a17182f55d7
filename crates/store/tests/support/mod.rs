//! A fault-injecting TCP proxy for the MongoDB wire protocol: it forwards
//! everything, and on request lets a chosen command reach the server but loses
//! the server's reply (closing the client's connection), the ambiguous failure
//! after which a client cannot know whether its write was applied.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mongodb::bson::RawDocument;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OP_MSG: i32 = 2013;

struct Rule {
    command: String,
    /// Matching commands still to let through before the one whose reply is lost.
    skip: u32,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    lost: AtomicU64,
}

pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port, forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        pipe(client, server, state).await;
                    }
                });
            }
        });
        FaultProxy { port, state, task }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Let `skip` commands named `command` through, then let the next one reach
    /// the server and lose its reply (the client's connection is closed).
    pub fn lose_reply(&self, command: &str, skip: u32) {
        self.state.rules.lock().unwrap_or_else(|e| e.into_inner()).push(Rule { command: command.into(), skip });
    }

    /// Replies lost so far.
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One whole wire-protocol message.
async fn read_message(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let n = usize::try_from(i32::from_le_bytes(len)).ok()?;
    if n < 16 {
        return None;
    }
    let mut msg = vec![0u8; n];
    msg[..4].copy_from_slice(&len);
    r.read_exact(&mut msg[4..]).await.ok()?;
    Some(msg)
}

fn header(msg: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]])
}

/// The command name of an OP_MSG (the first key of its body section).
fn command_name(msg: &[u8]) -> Option<String> {
    if header(msg, 12) != OP_MSG {
        return None;
    }
    let mut at = 20; // header (16) + flagBits (4)
    while at < msg.len() {
        let kind = msg[at];
        at += 1;
        let size = usize::try_from(header(msg, at)).ok()?;
        if kind == 0 {
            let doc = RawDocument::from_bytes(msg.get(at..at + size)?).ok()?;
            return doc.iter().next()?.ok().map(|(k, _)| k.to_string());
        }
        at += size;
    }
    None
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let doomed: Mutex<HashSet<i32>> = Mutex::new(HashSet::new());
    let up = async {
        while let Some(msg) = read_message(&mut client_r).await {
            if let Some(name) = command_name(&msg) {
                let mut rules = state.rules.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = rules.iter().position(|r| r.command == name) {
                    if rules[i].skip == 0 {
                        rules.remove(i);
                        doomed.lock().unwrap_or_else(|e| e.into_inner()).insert(header(&msg, 4));
                    } else {
                        rules[i].skip -= 1;
                    }
                }
            }
            if server_w.write_all(&msg).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        while let Some(msg) = read_message(&mut server_r).await {
            if doomed.lock().unwrap_or_else(|e| e.into_inner()).contains(&header(&msg, 8)) {
                state.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client_w.write_all(&msg).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    // Dropping both halves of both sockets closes them.
}
