//! Changing rooms: commits (create, add, remove, fresh keys) and messages, made again after
//! catching up when another commit took the epoch.

use super::*;

/// Times a commit or message is made again after another commit took the epoch.
const ATTEMPTS: usize = 5;

impl Rooms {
    /// Makes a commit with `make` and posts it; when another commit took the epoch, catches up
    /// and makes it again. Returns the log sequence number it got.
    pub(super) async fn commit(
        &mut self,
        session: &mut Session,
        room: &Room,
        make: impl Fn(&mut Device, &[u8]) -> Result<Commit, svs_mls::Error>
        + Send
        + Sync
        + Clone
        + 'static,
    ) -> Result<u64, CliError> {
        let group = room.group_id();
        for _ in 0..ATTEMPTS {
            self.catch_up(session, &room.group, None).await?;
            let (make_now, group_now) = (make.clone(), group.clone());
            let commit = self.with_device(move |d| make_now(d, &group_now)).await?;
            let posted = session
                .groups()
                .post_group_message(PostGroupMessageRequest {
                    device_id: self.device_id().into(),
                    message: commit.message.into(),
                    member_devices: commit
                        .members_after
                        .iter()
                        .map(|m| m.device_id.to_vec().into())
                        .collect(),
                    welcome: commit.welcome.unwrap_or_default().into(),
                    welcome_devices: commit
                        .welcome_devices
                        .iter()
                        .map(|d| d.to_vec().into())
                        .collect(),
                })
                .await;
            let group_now = group.clone();
            match posted {
                Ok(posted) => {
                    // Others' messages that landed between the catch-up and this commit are in
                    // the old epoch: read them before applying the commit.
                    let posted = posted.into_inner();
                    let seq = posted.seq;
                    self.catch_up(session, &room.group, Some(seq)).await?;
                    self.with_device(move |d| d.commit_accepted(&group_now))
                        .await?;
                    self.advance(&room.group, seq, posted.index)?;
                    return Ok(seq);
                }
                Err(status) => {
                    self.with_device(move |d| d.commit_lost(&group_now)).await?;
                    if status.code() != tonic::Code::FailedPrecondition {
                        return Err(status.into());
                    }
                }
            }
        }
        Err(CliError::Refused(format!(
            "others kept changing room {} ({ATTEMPTS} attempts); try again",
            room.label()
        )))
    }

    pub(super) fn advance(&mut self, group: &str, seq: u64, index: u64) -> Result<(), CliError> {
        if let Some(room) = self.index.by_group_mut(group) {
            room.cursor = room.cursor.max(seq);
            room.last_index = room.last_index.max(index);
        }
        self.index.save()
    }

    /// Posts an application message, catching up and encrypting again when the epoch moved.
    pub(super) async fn post_body(
        &mut self,
        session: &mut Session,
        room: &Room,
        body: Body,
    ) -> Result<u64, CliError> {
        let bytes = body.encode();
        self.post_made(session, room, move |d, group| d.encrypt(group, &bytes))
            .await?
            .ok_or_else(|| {
                CliError::Refused(format!("this device is no longer in room {}", room.label()))
            })
    }

    /// Makes a message that does not change the epoch (an application message, a leave
    /// request) with `make` and posts it; when another commit took the epoch, catches up and
    /// makes it again. The log sequence number it got, or `None` when catching up showed this
    /// device is no longer in the room.
    async fn post_made(
        &mut self,
        session: &mut Session,
        room: &Room,
        make: impl Fn(&mut Device, &[u8]) -> Result<Vec<u8>, svs_mls::Error>
        + Send
        + Sync
        + Clone
        + 'static,
    ) -> Result<Option<u64>, CliError> {
        let group = room.group_id();
        for _ in 0..ATTEMPTS {
            self.catch_up(session, &room.group, None).await?;
            if self.index.by_group_mut(&room.group).is_none() {
                return Ok(None);
            }
            let (make_now, group_now) = (make.clone(), group.clone());
            let message = self.with_device(move |d| make_now(d, &group_now)).await?;
            let posted = session
                .groups()
                .post_group_message(PostGroupMessageRequest {
                    device_id: self.device_id().into(),
                    message: message.into(),
                    ..Default::default()
                })
                .await;
            match posted {
                Ok(posted) => return Ok(Some(posted.into_inner().seq)),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => continue,
                Err(status) => return Err(status.into()),
            }
        }
        Err(CliError::Refused(format!(
            "others kept changing room {} ({ATTEMPTS} attempts); try again",
            room.label()
        )))
    }

    /// Creates a room with every device of `with` (and this person's other devices).
    pub async fn create(
        &mut self,
        session: &mut Session,
        name: &str,
        with: &[String],
    ) -> Result<Vec<MemberDevice>, CliError> {
        check_room_name(name)?;
        if self.index.find(name).is_some() {
            return Err(CliError::Usage(format!(
                "this device is already in a room called {name}"
            )));
        }
        let mut names: Vec<String> = with.to_vec();
        names.push(self.me.name.clone());
        let claimed = self.claim(session, &names).await?;
        let group = self.with_device(|d| d.create_group()).await?;
        let room = Room {
            name: name.to_string(),
            group: hex::encode(&group),
            cursor: 0,
            last_index: 0,
            updated_ms: svs_common::time::now_ms(),
            sent_since_update: 0,
        };
        self.index.insert(room.clone());
        self.index.save()?;
        let devices: Vec<MemberDevice> = claimed.iter().map(|(c, _)| c.device()).collect();
        self.add_claimed(session, &room, claimed).await?;
        Ok(devices)
    }

    pub(super) async fn add_claimed(
        &mut self,
        session: &mut Session,
        room: &Room,
        claimed: Vec<(DeviceCertificate, Vec<u8>)>,
    ) -> Result<(), CliError> {
        if claimed.is_empty() {
            return Ok(());
        }
        let claimed = Arc::new(claimed);
        self.commit(session, room, move |d, group| d.add(group, &claimed))
            .await?;
        // Devices joining now learn the room's name from the next message.
        let name = self
            .index
            .find(&room.label())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        if !name.is_empty() {
            self.post_body(session, room, Body::RoomName { name })
                .await?;
        }
        Ok(())
    }

    /// Adds every device of `names` to a room.
    pub async fn add(
        &mut self,
        session: &mut Session,
        room: &str,
        names: &[String],
    ) -> Result<Vec<MemberDevice>, CliError> {
        let room = self.room(room)?;
        let present: BTreeSet<MemberDevice> = {
            let group = room.group_id();
            self.with_device(move |d| d.members(&group))
                .await?
                .into_iter()
                .map(|(m, _)| m)
                .collect()
        };
        let claimed: Vec<_> = self
            .claim(session, names)
            .await?
            .into_iter()
            .filter(|(c, _)| !present.contains(&c.device()))
            .collect();
        if claimed.is_empty() {
            return Err(CliError::Usage(format!(
                "every device of {} is in {} already",
                names.join(", "),
                room.label()
            )));
        }
        let devices = claimed.iter().map(|(c, _)| c.device()).collect();
        self.add_claimed(session, &room, claimed).await?;
        Ok(devices)
    }

    /// Removes every device of `name` (or the one device `name/xxxxxxxx`) from a room.
    pub async fn remove(
        &mut self,
        session: &mut Session,
        room: &str,
        who: &str,
    ) -> Result<Vec<MemberDevice>, CliError> {
        let room = self.room(room)?;
        let group = room.group_id();
        let members = self.with_device(move |d| d.members(&group)).await?;
        let gone: Vec<MemberDevice> = members
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| m.name == svs_common::names::canonical(who) || m.to_string() == who)
            .filter(|m| *m != self.me)
            .collect();
        if gone.is_empty() {
            return Err(CliError::Usage(format!(
                "{who} has no device in {} (other than this one)",
                room.label()
            )));
        }
        let removing = Arc::new(gone.clone());
        self.commit(session, &room, move |d, group| d.remove(group, &removing))
            .await?;
        Ok(gone)
    }

    /// Leaves a room: asks the others to remove this device (MLS lets no member commit its own
    /// removal), then deletes the room and its keys here. Returns the room's label.
    pub async fn leave(&mut self, session: &mut Session, room: &str) -> Result<String, CliError> {
        let room = self.room(room)?;
        let asked = self
            .post_made(session, &room, |d, group| d.leave(group))
            .await?;
        if asked.is_some() {
            let group = room.group_id();
            self.with_device(move |d| d.forget(&group)).await?;
            self.index.remove(&room.group);
            self.index.save()?;
        }
        Ok(room.label())
    }

    /// Commits the removal of members who asked to leave the room, if any still wait.
    pub(super) async fn commit_leaves(
        &mut self,
        session: &mut Session,
        group: &str,
    ) -> Result<(), CliError> {
        let Some(room) = self.index.by_group_mut(group).cloned() else {
            return Ok(());
        };
        let group_id = room.group_id();
        if !self
            .with_device(move |d| d.has_pending_leaves(&group_id))
            .await?
        {
            return Ok(());
        }
        match self
            .commit(session, &room, |d, group| d.commit_leaves(group))
            .await
        {
            // Another member's commit removed them first.
            Err(CliError::Mls(svs_mls::Error::NothingPending(_))) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Writes a line in a room.
    pub async fn send(
        &mut self,
        session: &mut Session,
        room: &str,
        text: &str,
    ) -> Result<(), CliError> {
        let room = self.room(room)?;
        self.post_body(
            session,
            &room,
            Body::Text {
                text: text.to_string(),
            },
        )
        .await?;
        if let Some(r) = self.index.by_group_mut(&room.group) {
            r.sent_since_update += 1;
        }
        self.index.save()?;
        self.refresh_keys_if_due(session, &room.group).await
    }

    /// Commits fresh keys for this device in the room when `KeyRefresh` says it is time.
    pub(super) async fn refresh_keys_if_due(
        &mut self,
        session: &mut Session,
        group: &str,
    ) -> Result<(), CliError> {
        let Some(room) = self.index.by_group_mut(group).cloned() else {
            return Ok(());
        };
        let age = svs_common::time::now_ms().saturating_sub(room.updated_ms);
        if age < self.refresh.every.as_millis() as u64
            && room.sent_since_update < self.refresh.after_messages
        {
            return Ok(());
        }
        self.commit(session, &room, |d, group| d.update(group))
            .await?;
        if let Some(r) = self.index.by_group_mut(group) {
            r.updated_ms = svs_common::time::now_ms();
            r.sent_since_update = 0;
        }
        self.index.save()
    }
}
