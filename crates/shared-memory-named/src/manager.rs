//! `multiprocessing.Manager().dict()`, underneath: one server process owns the
//! dictionary; every other process holds a proxy, and every access through a
//! proxy (`d[k] = v`, `d[k]`) is a request to the server and a reply from it, a
//! round trip through the kernel (CPython `Lib/multiprocessing/managers.py`:
//! `BaseProxy._callmethod` sends `(id, methodname, args, kwds)` and waits for the
//! answer). Here the requests travel on one ipc-channel (a Unix socket), and each
//! client has its own reply channel, all made before the fork.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use common::fork;
use common::process::Child;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::{Deserialize, Serialize};

/// What a proxy asks the server; `client` says which reply channel to answer on.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Get {
        client: usize,
        key: String,
    },
    Set {
        client: usize,
        key: String,
        value: i64,
    },
    Items {
        client: usize,
    },
    Served {
        client: usize,
    },
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Value(Option<i64>),
    Done,
    Items(Vec<(String, i64)>),
    Served(u64),
}

/// The server process and the proxies not handed out yet.
#[derive(Debug)]
pub struct Manager {
    server: Child,
    requests: IpcSender<Request>,
    replies: Vec<Option<IpcReceiver<Reply>>>,
}

/// `d = manager.dict()` in one process: its way to the server.
#[derive(Debug)]
pub struct DictProxy {
    id: usize,
    requests: IpcSender<Request>,
    replies: IpcReceiver<Reply>,
    patience: Duration,
}

impl Manager {
    /// Fork the server, with a reply channel for each of `proxies` proxies.
    pub fn start(proxies: usize) -> anyhow::Result<Manager> {
        let (requests, inbox) = ipc::channel::<Request>().context("opening a channel")?;
        let mut senders = Vec::new();
        let mut replies = Vec::new();
        for _ in 0..proxies {
            let (tx, rx) = ipc::channel::<Reply>().context("opening a channel")?;
            senders.push(tx);
            replies.push(Some(rx));
        }
        // Child: the server. It owns the dict; `move` gives it the request
        // receiver and the reply senders (the parent's copies go with the closure).
        let server = fork(move || {
            crate::signals::default_in_child();
            serve(&inbox, &senders)
        })?;
        Ok(Manager {
            server,
            requests,
            replies,
        })
    }

    pub fn pid(&self) -> i32 {
        self.server.pid()
    }

    /// Proxy number `id` (each can be handed out once).
    pub fn proxy(&mut self, id: usize, patience: Duration) -> anyhow::Result<DictProxy> {
        let replies = self.replies.get_mut(id).and_then(Option::take);
        let replies = replies.context("no such proxy, or handed out already")?;
        Ok(DictProxy {
            id,
            requests: self.requests.clone(),
            replies,
            patience,
        })
    }

    /// `manager.shutdown()`: ask the server to stop, and join it (bounded).
    pub fn shutdown(mut self, patience: Duration) -> anyhow::Result<()> {
        let _ = self.requests.send(Request::Shutdown);
        let exit = self.server.join_within(patience)?;
        if !exit.success() {
            bail!("the manager's server ended with {exit}");
        }
        Ok(())
    }
}

/// The server's loop: one request at a time, one reply each. It ends on
/// `Shutdown`, or when no sender is left anywhere.
fn serve(inbox: &IpcReceiver<Request>, replies: &[IpcSender<Reply>]) -> anyhow::Result<()> {
    let mut dict: BTreeMap<String, i64> = BTreeMap::new();
    let mut served = 0u64;
    loop {
        // A quiet second is no reason to stop: clients may be slow. The lesson
        // ends the server with Shutdown; if the lesson dies, so does the server
        // (the kit's parent-death signal).
        let request = match inbox.try_recv_timeout(Duration::from_secs(1)) {
            Ok(r) => r,
            Err(TryRecvError::Empty) => continue,
            Err(TryRecvError::IpcError(IpcError::Disconnected)) => return Ok(()),
            Err(TryRecvError::IpcError(e)) => bail!("the server's receive failed: {e}"),
        };
        served += 1;
        let (client, reply) = match request {
            Request::Get { client, key } => (client, Reply::Value(dict.get(&key).copied())),
            Request::Set { client, key, value } => {
                dict.insert(key, value);
                (client, Reply::Done)
            }
            Request::Items { client } => {
                let items = dict.iter().map(|(k, v)| (k.clone(), *v)).collect();
                (client, Reply::Items(items))
            }
            Request::Served { client } => (client, Reply::Served(served)),
            Request::Shutdown => return Ok(()),
        };
        // A client that died is no reason for the server to stop.
        if let Some(tx) = replies.get(client) {
            let _ = tx.send(reply);
        }
    }
}

/// An ipc-channel error said in words: its own wording (`Ipc Disconnected.`)
/// means nothing to a learner.
fn server_error(e: IpcError, doing: &str) -> anyhow::Error {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    match e {
        IpcError::Disconnected => anyhow::anyhow!("the Manager server is gone"),
        IpcError::Io(io) if matches!(io.kind(), BrokenPipe | ConnectionReset) => {
            anyhow::anyhow!("the Manager server is gone")
        }
        IpcError::Io(io) => anyhow::anyhow!("{doing}: {io}"),
        IpcError::SerializationError(e) => anyhow::anyhow!("{doing}: a bad message: {e}"),
    }
}

impl DictProxy {
    fn call(&self, request: Request) -> anyhow::Result<Reply> {
        crate::signals::check()?;
        self.requests
            .send(request)
            .map_err(|e| server_error(e, "cannot send to the Manager server"))?;
        // Time this process spends stopped (Ctrl-Z of the whole job) is left
        // out of the patience (`common::process::Deadline`).
        let mut deadline = common::process::Deadline::after(self.patience);
        match common::ipc::try_recv_until(&self.replies, &mut deadline) {
            Ok(reply) => Ok(reply),
            Err(TryRecvError::Empty) => {
                crate::signals::check()?;
                bail!(
                    "the manager's server did not answer within {} s (stopped?)",
                    self.patience.as_secs()
                )
            }
            Err(TryRecvError::IpcError(e)) => {
                crate::signals::check()?;
                Err(server_error(e, "no answer from the Manager server"))
            }
        }
    }

    /// `d[key]` (None: Python would raise KeyError).
    pub fn get(&self, key: &str) -> anyhow::Result<Option<i64>> {
        let key = key.to_string();
        match self.call(Request::Get {
            client: self.id,
            key,
        })? {
            Reply::Value(v) => Ok(v),
            _ => bail!("the server answered another question"),
        }
    }

    /// `d[key] = value`.
    pub fn set(&self, key: &str, value: i64) -> anyhow::Result<()> {
        let key = key.to_string();
        match self.call(Request::Set {
            client: self.id,
            key,
            value,
        })? {
            Reply::Done => Ok(()),
            _ => bail!("the server answered another question"),
        }
    }

    /// `list(d.items())`, sorted by key.
    pub fn items(&self) -> anyhow::Result<Vec<(String, i64)>> {
        match self.call(Request::Items { client: self.id })? {
            Reply::Items(v) => Ok(v),
            _ => bail!("the server answered another question"),
        }
    }

    /// How many requests the server has answered so far (this one included).
    pub fn served(&self) -> anyhow::Result<u64> {
        match self.call(Request::Served { client: self.id })? {
            Reply::Served(n) => Ok(n),
            _ => bail!("the server answered another question"),
        }
    }
}

/// What one access costs, in seconds (fractions of a nanosecond kept: a
/// `Duration` divided by a count would round them away).
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// Through the Manager: a request and its reply.
    pub manager: f64,
    /// On the shared-memory Value.
    pub value: f64,
}

impl Costs {
    /// `19.4 us`: the kit's `fmt_duration`.
    pub fn manager_text(&self) -> String {
        common::timeline::fmt_duration(Duration::from_secs_f64(self.manager))
    }

    /// `1.9 ns`: in nanoseconds with a fraction (a `Duration` would say `0 ns`
    /// for less than one).
    pub fn value_text(&self) -> String {
        format!("{:.1} ns", self.value * 1e9)
    }

    /// How many Value accesses one Manager access costs.
    pub fn ratio(&self) -> f64 {
        self.manager / self.value.max(1e-12)
    }
}

/// The cost of one access, each way, measured in the same run: `rounds` of
/// `d['x'] = i; d['x']` through a proxy, and of `v.value = i; v.value` on a
/// shared-memory `Value` (common::shm::Value).
pub fn cost_per_access(
    proxy: &DictProxy,
    value: &common::shm::Value<i64>,
    rounds: u64,
) -> anyhow::Result<Costs> {
    let accesses = (2 * rounds.max(1)) as f64;
    let t = std::time::Instant::now();
    for i in 0..rounds as i64 {
        proxy.set("x", i)?;
        if proxy.get("x")? != Some(i) {
            bail!("the manager lost a write");
        }
    }
    let manager = t.elapsed().as_secs_f64() / accesses;
    let t = std::time::Instant::now();
    for i in 0..rounds as i64 {
        value.set(i);
        if std::hint::black_box(value.get()) != i {
            bail!("the shared Value lost a write");
        }
    }
    let value = t.elapsed().as_secs_f64() / accesses;
    Ok(Costs { manager, value })
}

/// Items shown the way Python prints a dict: `{'client1': 50, 'client2': 50}`.
pub fn python_dict(items: &[(String, i64)]) -> String {
    let kv: Vec<String> = items.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
    format!("{{{}}}", kv.join(", "))
}
