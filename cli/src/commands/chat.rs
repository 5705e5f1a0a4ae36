//! `svs chat`: full screen when stdin and stdout are terminals, line by line otherwise (or with
//! `--plain`), so scripts and pipes keep working.

use crate::commands::Global;
use crate::error::CliError;
use clap::Args;
use std::io::IsTerminal;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Line by line even on a terminal: events print as they arrive, each typed line is a
    /// command or a message (what pipes and scripts get).
    #[arg(long)]
    pub plain: bool,
    /// Full screen: entries (messages, events) kept for scrolling back; older ones are dropped.
    #[arg(long, env = "SVS_SCROLLBACK", default_value_t = crate::chat::model::DEFAULT_SCROLLBACK)]
    pub scrollback: usize,
}

pub async fn run(global: &Global, args: ChatArgs) -> Result<(), CliError> {
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if terminal && !args.plain {
        crate::chat::tui::run(global, args.scrollback).await
    } else {
        crate::chat::line::run(global).await
    }
}
