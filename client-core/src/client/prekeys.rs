//! Our prekey stock on the relay: refilled when the relay runs low, the signed prekey rotated
//! on schedule. The private halves are committed before the public ones are uploaded, so the
//! relay never hands out a prekey this device could lose.

use hush_prekeys::KemPreKeyKind;
use hush_protocol::wire::{self, request, response};

use super::core::{Core, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use crate::transport::Link;

/// Uploads prekeys when the relay runs low, and rotates the signed prekey on schedule.
pub(crate) async fn maintain(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    let counts =
        match link.request(request::Body::GetPrekeyCounts(wire::GetPrekeyCounts {})).await? {
            response::Body::PrekeyCounts(c) => c,
            _ => return Err(unexpected("PrekeyCounts")),
        };
    let opts = &inner.options;
    let now = crate::runtime::now_ms();
    let mut core = inner.core.lock().await;
    let rotation_ms = u64::try_from(opts.signed_prekey_rotation.as_millis()).unwrap_or(u64::MAX);
    let rotate = !counts.has_signed_prekey
        || core.prekeys.current_signed_prekey().is_none()
        || now.saturating_sub(core.account.signed_prekey_at_ms) >= rotation_ms;
    let refill = counts.one_time < opts.prekey_refill_below;
    let refill_kem = counts.kem_one_time < opts.prekey_refill_below.min(opts.kem_prekey_batch);
    let last_resort = !counts.has_last_resort_kem_prekey;
    if !(rotate || refill || refill_kem || last_resort) {
        return Ok(());
    }
    let upload = {
        let mut rng = rand::rng();
        let Core { identity, prekeys, account, .. } = &mut *core;
        let mut upload = wire::UploadPrekeys::default();
        if rotate {
            upload.signed_prekey =
                prekeys.generate_signed_prekey(&mut rng, identity, now / 1000).encode();
            // Keep older signed prekeys a while for handshakes already in flight.
            prekeys.remove_signed_prekeys_before((now / 1000).saturating_sub(30 * 24 * 3600));
        }
        if refill {
            upload.one_time_prekeys = prekeys
                .generate_one_time_prekeys(&mut rng, opts.prekey_batch)
                .iter()
                .map(|k| k.encode())
                .collect();
        }
        if refill_kem {
            upload.kem_prekeys = prekeys
                .generate_kem_prekeys(
                    &mut rng,
                    identity,
                    KemPreKeyKind::OneTime,
                    opts.kem_prekey_batch,
                )
                .iter()
                .map(|k| k.encode())
                .collect();
        }
        if (last_resort || rotate)
            && let Some(k) = prekeys
                .generate_kem_prekeys(&mut rng, identity, KemPreKeyKind::LastResort, 1)
                .first()
        {
            upload.last_resort_kem_prekey = k.encode();
        }
        if rotate {
            account.signed_prekey_at_ms = now;
        }
        upload
    };
    // Persist the private halves before the relay can hand out the public ones.
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    tx.put_prekeys(&core);
    tx.put_account(&core);
    inner.commit_then_emit(tx, core).await?;
    match link.request(request::Body::UploadPrekeys(upload)).await? {
        response::Body::PrekeyCounts(_) => Ok(()),
        _ => Err(unexpected("PrekeyCounts")),
    }
}
