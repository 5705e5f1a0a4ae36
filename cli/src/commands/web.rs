//! `svs web`: the chat in a browser, served by this binary on loopback; keys stay here.

use crate::commands::Global;
use crate::error::CliError;
use clap::Args;
use std::net::SocketAddr;

#[derive(Debug, Args)]
pub struct WebArgs {
    /// Where the page is served. Loopback only unless you pass another address on purpose
    /// (anyone who can reach it and learns the URL's secret can chat as you).
    #[arg(long, env = "SVS_WEB_LISTEN", default_value = crate::web::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Open the page in the default browser (xdg-open) once it is served.
    #[arg(long)]
    pub open: bool,
    /// Entries kept for scrolling back; older ones are dropped.
    #[arg(long, env = "SVS_SCROLLBACK", default_value_t = crate::web::DEFAULT_WEB_SCROLLBACK)]
    pub scrollback: usize,
    /// Pages open at once (each browser tab is one).
    #[arg(long, env = "SVS_WEB_MAX_PAGES", default_value_t = crate::web::DEFAULT_MAX_PAGES)]
    pub max_pages: usize,
    /// HTTP connections open at once; more are closed at once (a page's WebSocket counts only
    /// until it is open).
    #[arg(long, env = "SVS_WEB_MAX_CONNECTIONS", default_value_t = crate::web::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a connection has to send its request and get its answer before it is closed.
    #[arg(long, env = "SVS_WEB_REQUEST_TIMEOUT_SECS", default_value_t = crate::web::DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout_secs: u64,
}

pub async fn run(global: &Global, args: WebArgs) -> Result<(), CliError> {
    crate::web::run(
        global,
        crate::web::WebOptions {
            listen: args.listen,
            open: args.open,
            scrollback: args.scrollback,
            max_pages: args.max_pages,
            connections: crate::web::ConnectionLimits {
                max_connections: args.max_connections,
                request_timeout: std::time::Duration::from_secs(args.request_timeout_secs.max(1)),
            },
        },
    )
    .await
}
