//! `svs devices`: the devices of your name (each its own MLS member, certified by your identity
//! key), and removing a lost one from the directory and from your rooms.

use crate::commands::Global;
use crate::error::CliError;
use crate::rooms::Rooms;
use clap::{Args, Subcommand};
use svs_common::proto::directory::{ListDevicesRequest, RemoveDeviceRequest};
use svs_mls::{DeviceCertificate, device_id_hex};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: Option<DevicesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List your devices (the default).
    List,
    /// Remove one of your other devices (a lost laptop): the directory forgets it and its key
    /// packages, and this device removes it from every room they share, so it reads nothing
    /// said after. DEVICE is the start of its id as `svs devices` shows it.
    Remove { device: String },
}

pub async fn run(global: &Global, args: DevicesArgs) -> Result<(), CliError> {
    let mut session = global.register().await?;
    let result = async {
        let mut rooms = Rooms::open(&global.home(), &mut session).await?;
        let me = rooms.me().clone();
        let identity = session.identity_key().to_public_key();
        let listed = session
            .groups()
            .list_devices(ListDevicesRequest {
                names: vec![me.name.clone()],
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .devices;
        let devices: Vec<DeviceCertificate> = listed
            .iter()
            .filter_map(|c| DeviceCertificate::from_proto(c).ok())
            .collect();
        match args.command.unwrap_or(DevicesCommand::List) {
            DevicesCommand::List => {
                for device in &devices {
                    let mut notes = Vec::new();
                    if device.device() == me {
                        notes.push("this device".to_string());
                    }
                    if device.verify(&identity).is_err() {
                        notes.push("NOT certified by your identity key".to_string());
                    }
                    println!(
                        "{}  created {}{}",
                        device_id_hex(&device.device_id),
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_millis(device.created_ms)
                        ),
                        if notes.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", notes.join(", "))
                        }
                    );
                }
                Ok(())
            }
            DevicesCommand::Remove { device } => {
                let wanted = device.to_ascii_lowercase();
                let matching: Vec<&DeviceCertificate> = devices
                    .iter()
                    .filter(|d| device_id_hex(&d.device_id).starts_with(&wanted))
                    .collect();
                let target = match matching.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(CliError::Usage(format!(
                            "{} has no device whose id starts with {device:?} (`svs devices` lists them)",
                            me.name
                        )));
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "several devices start with {device:?}; give more of the id"
                        )));
                    }
                };
                if target.device() == me {
                    return Err(CliError::Usage(
                        "this is the device you are using; remove it from another of your devices"
                            .into(),
                    ));
                }
                crate::commands::room::caught_up(&rooms.sync(&mut session).await?);
                let who = target.device().to_string();
                let shared: Vec<String> = rooms
                    .list()
                    .await?
                    .into_iter()
                    .filter(|r| r.members.contains(&target.device()))
                    .map(|r| r.label)
                    .collect();
                for room in &shared {
                    rooms.remove(&mut session, room, &who).await?;
                    println!("removed {who} from room {room}");
                }
                let removed = session
                    .groups()
                    .remove_device(RemoveDeviceRequest {
                        device_id: target.device_id.to_vec().into(),
                    })
                    .await
                    .map_err(CliError::from)?
                    .into_inner()
                    .removed;
                if removed {
                    println!("the directory no longer lists {who}");
                }
                Ok(())
            }
        }
    }
    .await;
    let _ = session.quit().await;
    result
}
