//! Checking member devices against the identity keys pinned for their people, and claiming
//! key packages of checked devices.

use super::*;

impl Rooms {
    /// The identity key pinned for each of `names` (pinning on first sight, as messages do);
    /// a changed key is an error naming it.
    pub(super) async fn identities(
        &self,
        session: &mut Session,
        names: &BTreeSet<String>,
    ) -> Result<Vec<(String, svs_common::rsa::PublicKey)>, CliError> {
        let wanted: Vec<String> = names.iter().cloned().collect();
        let found = session.lookup_keys(&wanted).await?;
        let mut keys = Vec::new();
        for peer in found.peers {
            let canonical = svs_common::names::canonical(&peer.name);
            if let PinCheck::Changed { pinned } =
                session.pins.check(&canonical, &peer.public_key_der)?
            {
                return Err(CliError::KeyChanged {
                    name: canonical,
                    pinned,
                    now: svs_common::identity::fingerprint_hex(
                        &svs_common::identity::fingerprint_der(&peer.public_key_der),
                    ),
                });
            }
            keys.push((
                canonical,
                svs_common::identity::parse_public_key(&peer.public_key_der)?,
            ));
        }
        if let Some(unknown) = found.unknown.first() {
            return Err(CliError::Usage(format!(
                "nobody is registered as {unknown}"
            )));
        }
        Ok(keys)
    }

    /// Problems with `members`: a device whose published certificate is missing, does not
    /// verify under its person's pinned key, or certifies another signature key.
    pub(super) async fn check_members(
        &self,
        session: &mut Session,
        members: &[(MemberDevice, Vec<u8>)],
    ) -> Result<Vec<String>, CliError> {
        let names: BTreeSet<String> = members.iter().map(|(m, _)| m.name.clone()).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let identities = match self.identities(session, &names).await {
            Ok(keys) => keys,
            Err(e @ CliError::KeyChanged { .. }) => return Ok(vec![e.to_string()]),
            Err(e) => return Err(e),
        };
        let listed = session
            .groups()
            .list_devices(ListDevicesRequest {
                names: names.iter().cloned().collect(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .devices;
        let certificates: Vec<DeviceCertificate> = listed
            .iter()
            .filter_map(|c| DeviceCertificate::from_proto(c).ok())
            .collect();
        let mut problems = Vec::new();
        for (member, signature_key) in members {
            let certified = certificates.iter().find(|c| c.device() == *member);
            let key = identities.iter().find(|(n, _)| *n == member.name);
            let ok = match (certified, key) {
                (Some(c), Some((_, key))) => {
                    c.verify(key).is_ok() && c.signature_key == *signature_key
                }
                _ => false,
            };
            if !ok {
                problems.push(format!(
                    "device {member} is NOT certified by the key pinned for {}: do not trust what it says",
                    member.name
                ));
            }
        }
        Ok(problems)
    }

    /// Claims a key package for every device of `names` except this one, each checked against
    /// its person's pinned key.
    pub(super) async fn claim(
        &self,
        session: &mut Session,
        names: &[String],
    ) -> Result<Vec<(DeviceCertificate, Vec<u8>)>, CliError> {
        let canonical: BTreeSet<String> = names
            .iter()
            .map(|n| {
                svs_common::names::validate(n)?;
                Ok(svs_common::names::canonical(n))
            })
            .collect::<Result<_, svs_common::Error>>()?;
        let identities = self.identities(session, &canonical).await?;
        let claimed = session
            .groups()
            .claim_key_packages(ClaimKeyPackagesRequest {
                names: canonical.iter().cloned().collect(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner();
        let mut out = Vec::new();
        for c in claimed.key_packages {
            let Some(proto) = c.device else { continue };
            let certificate = DeviceCertificate::from_proto(&proto)?;
            if certificate.device() == self.me {
                continue;
            }
            let key = identities
                .iter()
                .find(|(n, _)| *n == certificate.name)
                .map(|(_, k)| k)
                .ok_or_else(|| {
                    CliError::Refused(format!(
                        "the directory sent a device of {}, whom nobody asked for",
                        certificate.name
                    ))
                })?;
            certificate.verify(key)?;
            out.push((certificate, c.key_package.to_vec()));
        }
        let me = &self.me.name;
        let missing: Vec<String> = claimed
            .without_key_packages
            .into_iter()
            .filter(|n| n != me)
            .collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "{} has no MLS device yet: they need to run `svs room list` (or any `svs room` command) once",
                missing.join(", ")
            )));
        }
        Ok(out)
    }
}
