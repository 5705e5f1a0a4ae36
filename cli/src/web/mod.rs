//! `svs web`: the chat drawn in a browser, every key and all crypto still in this process. One
//! local HTTP server (`routes`) serves the page compiled into the binary (`assets`) and one
//! WebSocket per open page (`socket`), behind the checks that keep other sites and other machines
//! out (`guard`). One task runs the chat's `Engine` exactly as the full-screen terminal does; the
//! pages send it what the person does and receive the model as JSON (`snapshot`) after every
//! change. Each page's library and playbacks run on its own socket (`media`): frames and sound
//! pass from stream-service to the browser's decoders as they came.

mod assets;
mod guard;
mod media;
mod routes;
mod snapshot;
mod socket;

use crate::chat::engine::{After, Engine};
use crate::commands::Global;
use crate::error::CliError;
pub(crate) use routes::ConnectionLimits;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Where the page is served unless `--listen` says otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8730";
/// Entries the browser's conversation keeps by default (`--scrollback`).
pub(crate) const DEFAULT_WEB_SCROLLBACK: usize = 2_000;
/// Pages served at once by default (`--max-pages`): a person's tabs, not a crowd.
pub(crate) const DEFAULT_MAX_PAGES: usize = 8;
/// HTTP connections open at once by default (`--max-connections`).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Seconds a connection has for its request and answer by default (`--request-timeout-secs`).
pub(crate) const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
/// What the person's actions queue up to before a page waits (the engine works one at a time).
const ACTION_QUEUE: usize = 32;

#[derive(Debug)]
pub(crate) struct WebOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) open: bool,
    pub(crate) scrollback: usize,
    pub(crate) max_pages: usize,
    pub(crate) connections: ConnectionLimits,
}

/// What a page asks the chat to do.
#[derive(Debug)]
enum Action {
    /// A line typed in the message box: a message or a command, as in the terminal.
    Line(String),
    /// The answer to the open question (`t`/`y` yes, `n` no).
    Answer(char),
    /// Show conversation number N (0 is everything).
    Show(usize),
    /// The safety number with a person, to compare (and scan as a QR code).
    Verify(String),
}

/// What the chat answers a page's action.
#[derive(Debug)]
enum Reply {
    Done,
    /// The line did not go: back to the box.
    Restore(String),
    /// The safety number with `name`, or why there is none.
    Safety {
        name: String,
        number: Result<String, String>,
    },
}

/// One action and where to answer it.
#[derive(Debug)]
struct Request {
    action: Action,
    reply: oneshot::Sender<Reply>,
}

/// What the HTTP side shares with the chat task.
#[derive(Debug, Clone)]
struct Shared {
    actions: mpsc::Sender<Request>,
    /// The newest model as JSON; every page shows it.
    state: watch::Receiver<Arc<str>>,
    guard: Arc<guard::Guard>,
    pages: Arc<tokio::sync::Semaphore>,
    /// The session's token, for stream-service (it changes when the chat reconnects).
    token: watch::Receiver<String>,
    stream: media::StreamAccess,
}

pub(crate) async fn run(global: &Global, options: WebOptions) -> Result<(), CliError> {
    if options.listen.ip().is_unspecified() {
        eprintln!(
            "note: serving on every interface ({}): right inside a container whose port is published to 127.0.0.1 only; elsewhere anyone who can reach this machine and learns the secret can chat as you",
            options.listen
        );
    } else if !options.listen.ip().is_loopback() {
        eprintln!(
            "warning: serving on {} (not loopback): anyone who can reach it and learns the secret can chat as you",
            options.listen
        );
    }
    // The address first: a port in use fails before anything registers.
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot serve the page on {}: {e} (pick another with --listen)",
                options.listen
            ))
        })?;
    let mut engine = Engine::start(global, options.scrollback).await?;
    let bound = listener.local_addr()?;
    let guard = Arc::new(guard::Guard::new(bound)?);
    let url = guard.page_url();
    let (actions_tx, mut actions) = mpsc::channel(ACTION_QUEUE);
    let (state_tx, state_rx) = watch::channel(snapshot::json(&engine.model));
    let (token_tx, token_rx) = watch::channel(engine.token().to_string());
    let shared = Shared {
        actions: actions_tx,
        state: state_rx,
        guard,
        pages: Arc::new(tokio::sync::Semaphore::new(options.max_pages.max(1))),
        token: token_rx,
        stream: media::StreamAccess {
            url: global.stream.clone(),
            ca: global.ca(),
        },
    };
    let server = tokio::spawn(routes::serve(listener, shared, options.connections));
    println!("svs web: chat as {} at {url}", engine.name());
    println!("(the address carries a secret: open it only in your own browser; Ctrl-C stops)");
    if options.open {
        open_browser(&url);
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        tokio::select! {
            happening = engine.next() => {
                if let Err(e) = engine.apply(happening).await {
                    break Err(e);
                }
            }
            Some(request) = actions.recv() => {
                let after = match request.action {
                    Action::Line(line) => engine.submit(line).await,
                    Action::Answer(answer) => engine.answer(answer).await,
                    Action::Show(view) => {
                        engine.model.show(view);
                        After::Stay
                    }
                    Action::Verify(name) => {
                        let number = engine.safety_number(&name).map_err(|e| e.to_string());
                        let _ = request.reply.send(Reply::Safety { name, number });
                        continue;
                    }
                };
                let reply = match after {
                    After::Leave => {
                        let _ = request.reply.send(Reply::Done);
                        break Ok(());
                    }
                    After::Restore(line) => Reply::Restore(line),
                    After::Stay => Reply::Done,
                };
                let _ = request.reply.send(reply);
            }
            _ = &mut ctrl_c => break Ok(()),
        }
        token_tx.send_if_modified(|token| {
            let changed = token != engine.token();
            if changed {
                *token = engine.token().to_string();
            }
            changed
        });
        let now = snapshot::json(&engine.model);
        state_tx.send_if_modified(|shown| {
            let changed = **shown != *now;
            if changed {
                *shown = now;
            }
            changed
        });
    };
    server.abort();
    engine.leave().await;
    println!("left the chat");
    result
}

/// Asks the desktop to open `url`; a machine without one only says so.
fn open_browser(url: &str) {
    match std::process::Command::new("xdg-open")
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            // Reaped off the async threads.
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!("cannot open a browser ({e}); open the address above yourself"),
    }
}
