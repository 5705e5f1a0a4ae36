//! Reading rooms: joining from Welcomes and processing each room's new log entries.

use super::*;

impl Rooms {
    /// Joins rooms whose Welcomes wait, then reads every room's new entries.
    pub async fn sync(&mut self, session: &mut Session) -> Result<Vec<RoomEvent>, CliError> {
        self.accept_welcomes(session).await?;
        let groups: Vec<String> = self.index.rooms().iter().map(|r| r.group.clone()).collect();
        for group in groups {
            self.catch_up(session, &group, None).await?;
            self.commit_leaves(session, &group).await?;
            self.refresh_keys_if_due(session, &group).await?;
        }
        Ok(std::mem::take(&mut self.pending))
    }

    pub(super) async fn accept_welcomes(&mut self, session: &mut Session) -> Result<(), CliError> {
        let welcomes = session
            .groups()
            .fetch_welcomes(FetchWelcomesRequest {
                device_id: self.device_id().into(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .welcomes;
        let Some(last) = welcomes.last().map(|w| w.seq) else {
            return Ok(());
        };
        for welcome in welcomes {
            let bytes = welcome.welcome.to_vec();
            let joined = self
                .with_device(move |d| {
                    let group = d.join(&bytes)?;
                    let members = d.members(&group)?;
                    Ok((group, members))
                })
                .await;
            let (group, members) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    self.pending.push(RoomEvent::Warning {
                        room: "?".into(),
                        text: format!("could not join a room this device was added to: {e}"),
                    });
                    continue;
                }
            };
            let room = Room {
                name: String::new(),
                group: hex::encode(&group),
                cursor: 0,
                last_index: 0,
                updated_ms: svs_common::time::now_ms(),
                sent_since_update: 0,
            };
            let label = room.label();
            self.index.insert(room);
            let by = members
                .iter()
                .map(|(m, _)| m)
                .find(|m| m.device_id.as_slice() == welcome.from_device.as_ref())
                .cloned()
                .unwrap_or_else(|| MemberDevice {
                    name: "?".into(),
                    device_id: [0; 16],
                });
            self.pending.push(RoomEvent::Joined {
                room: label.clone(),
                by,
            });
            for text in self.check_members(session, &members).await? {
                self.pending.push(RoomEvent::Warning {
                    room: label.clone(),
                    text,
                });
            }
        }
        self.index.save()?;
        session
            .groups()
            .ack_welcomes(AckWelcomesRequest {
                device_id: self.device_id().into(),
                up_to_seq: last,
            })
            .await
            .map_err(CliError::from)?;
        Ok(())
    }

    /// Reads the room's new entries into `pending`; with `until`, only those before it.
    pub(super) async fn catch_up(
        &mut self,
        session: &mut Session,
        group: &str,
        until: Option<u64>,
    ) -> Result<(), CliError> {
        loop {
            let Some(room) = self.index.by_group_mut(group).cloned() else {
                return Ok(());
            };
            let fetched = session
                .groups()
                .fetch_group(FetchGroupRequest {
                    group_id: room.group_id().into(),
                    device_id: self.device_id().into(),
                    after_seq: room.cursor,
                })
                .await;
            let page = match fetched {
                Ok(page) => page.into_inner(),
                // A group this device just made: nothing on the directory until its first commit.
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    self.index.remove(group);
                    self.index.save()?;
                    self.pending.push(RoomEvent::RemovedMe {
                        room: room.label(),
                        by: None,
                    });
                    return Ok(());
                }
                Err(status) => return Err(status.into()),
            };
            // Indexes have no gaps (sequence numbers may): a jump past the last one handled means
            // entries expired unread.
            if page.first_index > room.last_index + 1 && room.last_index > 0 {
                self.pending.push(RoomEvent::Warning {
                    room: room.label(),
                    text: format!(
                        "{} entries expired before this device read them; ask a member to remove and add it again",
                        page.first_index - room.last_index - 1
                    ),
                });
            }
            // The directory is not trusted to page honestly: entries at or before the cursor
            // are not processed again, and a page that moves nothing on ends the round.
            let mut progressed = false;
            for entry in &page.entries {
                let cursor = self
                    .index
                    .by_group_mut(group)
                    .map_or(u64::MAX, |r| r.cursor);
                if entry.seq <= cursor {
                    continue;
                }
                if until.is_some_and(|until| entry.seq >= until) {
                    self.index.save()?;
                    return Ok(());
                }
                progressed = true;
                self.handle_entry(session, &room, entry).await?;
                if self.index.by_group_mut(group).is_none() {
                    return Ok(());
                }
            }
            self.index.save()?;
            if !page.more || !progressed {
                return Ok(());
            }
        }
    }

    pub(super) async fn handle_entry(
        &mut self,
        session: &mut Session,
        room: &Room,
        entry: &GroupEntry,
    ) -> Result<(), CliError> {
        if let Some(r) = self.index.by_group_mut(&room.group) {
            r.cursor = r.cursor.max(entry.seq);
            r.last_index = r.last_index.max(entry.index);
        }
        let group = room.group_id();
        let own = entry.from_device.as_ref() == self.me.device_id.as_slice();
        let epoch = {
            let group = group.clone();
            self.with_device(move |d| d.epoch(&group)).await?
        };
        if own || entry.epoch < epoch {
            return Ok(());
        }
        let message = entry.message.to_vec();
        let processed = self.with_device(move |d| d.process(&group, &message)).await;
        let label = self
            .index
            .by_group_mut(&room.group)
            .map(|r| r.label())
            .unwrap_or_else(|| room.label());
        match processed {
            Ok(Event::Leaving { who }) => {
                self.pending.push(RoomEvent::Leaving { room: label, who })
            }
            Ok(Event::Message { from, body }) => match Body::decode(&body) {
                Some(Body::Text { text }) => self.pending.push(RoomEvent::Message {
                    room: label,
                    from,
                    text,
                }),
                Some(Body::RoomName { name }) => {
                    if let Some(named) = self.index.name_room(&room.group, &name) {
                        self.pending.push(RoomEvent::Named { label, name: named });
                    }
                }
                None => self.pending.push(RoomEvent::Warning {
                    room: label,
                    text: format!("{from} sent a message this version of svs cannot read"),
                }),
            },
            Ok(Event::Commit {
                by,
                added,
                removed,
                removed_me,
                ..
            }) => {
                if removed_me {
                    self.index.remove(&room.group);
                    self.index.save()?;
                    self.pending.push(RoomEvent::RemovedMe {
                        room: label,
                        by: Some(by),
                    });
                    return Ok(());
                }
                let problems = self.check_members(session, &added).await?;
                self.pending.push(RoomEvent::Members {
                    room: label.clone(),
                    by,
                    added: added.into_iter().map(|(m, _)| m).collect(),
                    removed,
                });
                for text in problems {
                    self.pending.push(RoomEvent::Warning {
                        room: label.clone(),
                        text,
                    });
                }
            }
            Err(e) => self.pending.push(RoomEvent::Warning {
                room: label,
                text: format!("could not read entry {}: {e}", entry.seq),
            }),
        }
        Ok(())
    }
}
