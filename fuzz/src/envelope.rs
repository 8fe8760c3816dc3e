//! Target `envelope`: the gate every transport hands received bytes to, for
//! a member in the clear and for one that encrypts (the keyring, issue #12).
//!
//! Byte 0 picks the mode (modulo 3); the rest is the input:
//!
//! 0. the clear gate of a member that does not encrypt gets the rest as a
//!    frame (this was the whole target before the keyring: the corpus of
//!    then is kept with a 0 put before each file);
//! 1. the gate of a member with the test keyring ([`test_keyring`]) gets the
//!    rest as a frame: the outer decoding, the cluster id in the clear and
//!    the opening, which refuses whatever is not sealed with one of its
//!    keys;
//! 2. the rest is decoded as an envelope, given our cluster id and sealed
//!    by the crate's own [`Sealer::seal`] with one of the test keys (byte 0
//!    / 3, even: the primary, odd: the second key, which the gate tries
//!    after the primary); the sealed frame goes to the gate with the
//!    keyring, which opens it, so the checks of what is inside are fuzzed.
//!    The plaintext is then always prost's encoding of an envelope: the
//!    refusal of a plaintext that does not decode is reached by no input
//!    (it is the same prost decoding that mode 0 fuzzes).
//!
//! Checked in every mode: an accepted envelope is queued, with our cluster
//! id, a sender and a body; a refused one is not. In mode 2 besides: an
//! envelope sealed with an installed key always opens, and the keyring is
//! transparent: the keyed gate accepts the sealed envelope if the clear
//! gate accepts the envelope itself, and queues it unchanged; it accepts
//! nothing the clear gate refuses, but for the size (the keyed gate allows
//! up to `SEAL_OVERHEAD` more, and sealing adds at most that much).

use gossip_core::pb::Envelope;
use gossip_core::{KEY_LEN, Key, Keyring, Rejection, SEAL_OVERHEAD, Sealer};
use prost::Message;

/// The test keys: the primary, then a second installed key.
const KEYS: [[u8; KEY_LEN]; 2] = [[0x5a; KEY_LEN], [0xa5; KEY_LEN]];

/// The test keyring of mode 1 and 2's gate: both `KEYS`, the first
/// primary. Also what the seed generator seals mode 1's seeds with.
pub fn test_keyring() -> Keyring {
    // The keys are constant and valid.
    Keyring::from_keys(
        KEYS.iter()
            .map(|k| Key::from_bytes(k).expect("a valid key")),
    )
    .expect("two distinct keys")
}

/// A sealer with only `KEYS[which % 2]` (0: the test keyring's primary,
/// 1: its second key), as a member that seals with that key.
pub fn test_sealer(which: usize) -> Sealer {
    let key = Key::from_bytes(&KEYS[which % KEYS.len()]).expect("a valid key");
    Sealer::new(Keyring::new(key))
}

/// Runs the mode byte 0 picks on the rest of `data`.
pub(crate) fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let (inbound, mut rx) = crate::gate();
            check(inbound.accept_bytes(rest), &mut rx);
        }
        1 => {
            let (inbound, mut rx) = crate::gate();
            let inbound = inbound.with_sealer(Sealer::new(test_keyring()));
            check(inbound.accept_bytes(rest), &mut rx);
        }
        _ => sealed(usize::from(mode / 3), rest),
    }
}

/// Mode 2: `rest` decoded, sealed with `KEYS[which % 2]`, to the keyed
/// gate, against the clear gate given the envelope itself.
fn sealed(which: usize, rest: &[u8]) {
    let Ok(mut env) = Envelope::decode(rest) else {
        return;
    };
    env.cluster_id = crate::CLUSTER.to_owned();
    let frame = test_sealer(which).seal(env.clone()).encode_to_vec();
    assert!(
        frame.len() <= env.encoded_len() + SEAL_OVERHEAD,
        "sealing added {} bytes to {}, more than SEAL_OVERHEAD",
        frame.len() - env.encoded_len(),
        env.encoded_len()
    );

    let (keyed, mut keyed_rx) = crate::gate();
    let keyed = keyed.with_sealer(Sealer::new(test_keyring()));
    let sealed_verdict = keyed.accept_bytes(&frame);
    let (clear, mut clear_rx) = crate::gate();
    let clear_verdict = clear.accept(env);
    match (&clear_verdict, &sealed_verdict) {
        (_, Err(Rejection::Decrypt(why))) => {
            panic!("an envelope sealed with an installed key did not open: {why}")
        }
        (Ok(()), Ok(())) => {
            let opened = keyed_rx.try_recv().expect("an accepted envelope is queued");
            let plain = clear_rx.try_recv().expect("an accepted envelope is queued");
            assert_eq!(opened, plain, "the keyed gate queues what was sealed");
            assert_eq!(opened.cluster_id, crate::CLUSTER);
            assert!(opened.from.is_some() && opened.body.is_some());
        }
        (Ok(()), Err(r)) => panic!("the clear gate accepts, the keyed gate refuses: {r}"),
        (Err(Rejection::Oversized { .. }), Ok(())) => check(sealed_verdict, &mut keyed_rx),
        (Err(r), Ok(())) => panic!("the keyed gate accepts, the clear gate refuses: {r}"),
        (Err(_), Err(_)) => {
            check(clear_verdict, &mut clear_rx);
            check(sealed_verdict, &mut keyed_rx);
        }
    }
}

/// The gate's verdict against its queue: an accepted envelope is queued,
/// with our cluster id, a sender and a body; a refused one is not.
fn check(
    verdict: Result<(), Rejection>,
    rx: &mut tokio::sync::mpsc::Receiver<gossip_core::pb::Envelope>,
) {
    match verdict {
        Ok(()) => {
            let env = rx.try_recv().expect("an accepted envelope is queued");
            assert_eq!(env.cluster_id, crate::CLUSTER);
            assert!(env.from.is_some() && env.body.is_some());
        }
        Err(
            Rejection::Malformed(_)
            | Rejection::Oversized { .. }
            | Rejection::ForeignCluster { .. }
            | Rejection::Decrypt(_)
            | Rejection::Overloaded
            | Rejection::ShuttingDown,
        ) => assert!(rx.try_recv().is_err(), "a refused envelope is not queued"),
    }
}

#[cfg(test)]
mod tests {
    use gossip_core::pb;

    use super::*;

    fn ping() -> Envelope {
        Envelope {
            cluster_id: crate::CLUSTER.into(),
            from: Some(pb::NodeId {
                addr: "127.0.0.1:7001".into(),
                generation: 1,
            }),
            body: Some(pb::envelope::Body::Ping(pb::Ping::default())),
            ..Default::default()
        }
    }

    /// The keyed gate of modes 1 and 2 opens what either test key seals
    /// (so mode 2 reaches the checks inside) and refuses the rest.
    #[test]
    fn the_test_keyring_opens_both_test_keys_only() {
        let keyed = |frame: &[u8]| {
            let (inbound, _rx) = crate::gate();
            inbound
                .with_sealer(Sealer::new(test_keyring()))
                .accept_bytes(frame)
        };
        for which in 0..2 {
            let frame = test_sealer(which).seal(ping()).encode_to_vec();
            assert_eq!(keyed(&frame), Ok(()), "key {which}");
        }
        let foreign = Sealer::new(Keyring::new(Key::from_bytes(&[7; KEY_LEN]).unwrap()));
        let refused = |r| matches!(r, Err(Rejection::Decrypt(_)));
        assert!(refused(keyed(&foreign.seal(ping()).encode_to_vec())));
        assert!(refused(keyed(&ping().encode_to_vec())), "unsealed");
    }

    /// Every mode runs its checks on a valid envelope without a panic, and
    /// an empty input is no input.
    #[test]
    fn every_mode_takes_a_valid_envelope() {
        let bytes = ping().encode_to_vec();
        for mode in 0..6u8 {
            run(&[&[mode][..], &bytes].concat());
        }
        run(&[]);
    }
}
