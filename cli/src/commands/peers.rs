//! `svs who`, `svs fingerprint`, `svs trust`, `svs token`: the directory and the keys in it.

use crate::commands::{Global, display};
use crate::error::CliError;
use crate::known_peers::KnownPeers;
use crate::session::load_identity;
use clap::Args;
use svs_common::identity;

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// One JSON array of {name, fingerprint, online_since}.
    #[arg(long)]
    pub json: bool,
}

pub async fn who(global: &Global, args: WhoArgs) -> Result<(), CliError> {
    let mut session = global.register().await?;
    let listed = session.list_peers().await;
    let _ = session.quit().await;
    let peers = listed?.peers;
    if args.json {
        let rows: Vec<_> = peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "fingerprint": p.fingerprint,
                    "online_since": p.online_since_ms,
                })
            })
            .collect();
        println!(
            "{}",
            crate::text::json_line(&serde_json::Value::Array(rows))
        );
    } else {
        for p in &peers {
            println!("{}", display::peer_line(p, &session.name));
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// A peer whose pinned fingerprint to show, with the safety number you and they compare;
    /// your own fingerprint when absent.
    pub peer: Option<String>,
    /// Also draw the safety number as a QR code (for the peer to scan or compare).
    #[arg(long, requires = "peer")]
    pub qr: bool,
}

pub fn fingerprint(global: &Global, args: FingerprintArgs) -> Result<(), CliError> {
    let home = global.home();
    match args.peer {
        None => {
            let name = global.name()?;
            let (key, _) = load_identity(&home, &name, global.key_bits)?;
            let fpr = identity::fingerprint(&key.to_public_key());
            println!("{name}  {}", identity::fingerprint_display(&fpr));
        }
        Some(peer) => {
            let pins = KnownPeers::load(home.known_peers_path())?;
            match pins.fingerprint(&peer) {
                Some(hex) => {
                    let bytes: [u8; 32] = hex::decode(hex)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| CliError::Usage(format!("the pin for {peer} is corrupt")))?;
                    println!("{peer}  {}", identity::fingerprint_display(&bytes));
                    let name = global.name()?;
                    let (key, _) = load_identity(&home, &name, global.key_bits)?;
                    let mine = identity::public_key_der(&key.to_public_key());
                    let theirs = pins
                        .key(&peer)
                        .ok_or_else(|| CliError::Usage(format!("the pin for {peer} is corrupt")))?;
                    let number = svs_common::safety::safety_number(&name, &mine, &peer, theirs);
                    println!(
                        "safety number with {peer} (the same on both sides; compare it with them):\n{}",
                        svs_common::safety::display(&number)
                    );
                    if args.qr {
                        println!("{}", qr(&number)?);
                    }
                }
                None => return Err(CliError::Usage(format!("no key is pinned for {peer} yet"))),
            }
        }
    }
    Ok(())
}

/// The safety number as a QR code in half-block characters (dark on light).
fn qr(number: &str) -> Result<String, CliError> {
    let code = qrcode::QrCode::new(number.as_bytes())
        .map_err(|e| CliError::Internal(format!("making the QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The peer whose current key to trust.
    pub peer: String,
}

pub async fn trust(global: &Global, args: TrustArgs) -> Result<(), CliError> {
    let mut session = global.register().await?;
    let listed = session.list_peers().await;
    let _ = session.quit().await;
    let canonical = svs_common::names::canonical(&args.peer);
    let peer = listed?
        .peers
        .into_iter()
        .find(|p| svs_common::names::canonical(&p.name) == canonical)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{} is not online; trust needs their current key",
                args.peer
            ))
        })?;
    let previous = session.pins.fingerprint(&peer.name).map(str::to_string);
    session.pins.pin(&peer.name, &peer.public_key_der)?;
    let fpr = identity::fingerprint_der(&peer.public_key_der);
    println!(
        "now trusting {}'s key {}",
        peer.name,
        identity::fingerprint_display(&fpr)
    );
    if let Some(previous) = previous.filter(|p| *p != peer.fingerprint) {
        println!("(replaces {previous})");
    }
    Ok(())
}

pub async fn token(global: &Global) -> Result<(), CliError> {
    let session = global.register().await?;
    eprintln!(
        "token for {} (valid until {} ms since the epoch; the directory ends an idle session after a minute without calls)",
        session.name, session.token_expires_at_ms
    );
    println!("{}", session.token);
    Ok(())
}
