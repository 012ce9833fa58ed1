//! Signed objects resist tampering and confusion: every field of every signed
//! object, changed after signing, is rejected; a signature made for one kind
//! never verifies as another; and each kind of malformed input gets its own
//! typed error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FEDERATION, HOUR_MS, T0, contract_terms_between, countersigned_contract, identity, signed_offer};
use fulcrum_proto::v1 as wire;
use fulcrum_protocol::Limits;
use fulcrum_protocol::contract::{ContractError, ContractTerms, SignedContract};
use fulcrum_protocol::envelope::{Envelope, EnvelopeError, Kind, sign_detached, verify_detached};
use fulcrum_protocol::ids::{ContractId, HoldId, NegotiationId, RequestId};
use fulcrum_protocol::keys::KeyError;
use fulcrum_protocol::messages::{
    Message, MessageError, Propose, StatusRequest, StatusTarget, Terminate, TerminationReason,
};
use fulcrum_protocol::offer::{OfferError, Price, SignedOffer};
use prost::Message as _;

/// A named change to a decoded message.
type Edit<T> = (&'static str, Box<dyn Fn(&mut T)>);

fn offer_envelope() -> Envelope {
    signed_offer(&identity(1), "fra1-c8m32", 10, 1_000_000, T0).sign(&identity(1)).envelope().clone()
}

fn contract_terms() -> ContractTerms {
    contract_terms_between(&identity(1), &identity(2), 7, T0)
}

fn countersigned() -> SignedContract {
    countersigned_contract(&identity(1), &identity(2), 7, T0)
}

/// Every single-byte change anywhere in an encoded envelope is rejected.
#[test]
fn every_byte_of_an_offer_envelope_is_protected() {
    let bytes = offer_envelope().encode();
    let limits = Limits::default();
    assert!(SignedOffer::verify(&bytes, FEDERATION, T0, &limits).is_ok());
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            assert!(SignedOffer::verify(&b, FEDERATION, T0, &limits).is_err(), "byte {i} xor {flip:#x} was accepted");
        }
    }
}

/// Changing any field of the offer body, keeping the signature, fails the signature.
#[test]
fn every_offer_field_is_covered_by_the_signature() {
    let original = offer_envelope().to_wire();
    let body = wire::Offer::decode(original.body.as_slice()).unwrap();
    let edits: Vec<Edit<wire::Offer>> = vec![
        ("provider", Box::new(|o| o.provider = identity(3).public().to_bytes().to_vec())),
        ("federation", Box::new(|o| o.federation.push('x'))),
        ("offer_id", Box::new(|o| o.offer_id.push('x'))),
        ("seq", Box::new(|o| o.seq += 1)),
        ("issued_at", Box::new(|o| o.issued_at_ms += 1)),
        ("expires_at", Box::new(|o| o.expires_at_ms += 1)),
        ("country", Box::new(|o| o.site.as_mut().unwrap().country = "FR".into())),
        ("region", Box::new(|o| o.site.as_mut().unwrap().region.push('x'))),
        ("datacenter", Box::new(|o| o.site.as_mut().unwrap().datacenter.push('x'))),
        ("flavour", Box::new(|o| o.flavour.as_mut().unwrap().name.push('x'))),
        ("vcpu", Box::new(|o| o.flavour.as_mut().unwrap().per_unit.as_mut().unwrap().vcpu += 1)),
        ("memory", Box::new(|o| o.flavour.as_mut().unwrap().per_unit.as_mut().unwrap().memory_mib += 1)),
        ("storage", Box::new(|o| o.flavour.as_mut().unwrap().per_unit.as_mut().unwrap().storage_gib += 1)),
        (
            "gpus",
            Box::new(|o| {
                o.flavour
                    .as_mut()
                    .unwrap()
                    .per_unit
                    .as_mut()
                    .unwrap()
                    .gpus
                    .push(wire::GpuCount { model: "h100".into(), count: 1 })
            }),
        ),
        ("units", Box::new(|o| o.units_available += 1)),
        ("price", Box::new(|o| o.unit_price_per_hour.as_mut().unwrap().micros -= 1)),
        ("currency", Box::new(|o| o.unit_price_per_hour.as_mut().unwrap().currency = "CHF".into())),
        ("min_duration", Box::new(|o| o.min_duration_ms += 1)),
        ("max_duration", Box::new(|o| o.max_duration_ms += 1)),
        ("labels", Box::new(|o| o.labels.push("gaia-x:level-2".into()))),
        ("sla", Box::new(|o| o.sla_permille -= 1)),
    ];
    for (name, edit) in edits {
        let mut b = body.clone();
        edit(&mut b);
        let tampered = wire::Envelope { body: b.encode_to_vec(), ..original.clone() };
        assert_eq!(Envelope::from_wire(tampered).unwrap_err(), EnvelopeError::BadSignature, "field {name}");
    }
    // Signer and signature swapped for another valid key's.
    let other = Envelope::seal(&identity(3), Kind::Offer, original.body.clone()).to_wire();
    let mixed = wire::Envelope { signer: other.signer.clone(), ..original.clone() };
    assert_eq!(Envelope::from_wire(mixed).unwrap_err(), EnvelopeError::BadSignature);
    // A valid envelope by someone else over the provider's offer is not the provider's offer.
    let err = SignedOffer::from_envelope(Envelope::from_wire(other).unwrap(), &Limits::default()).unwrap_err();
    assert!(matches!(err, OfferError::SignerMismatch { .. }), "{err:?}");
}

/// A signature of one kind never verifies as any other kind.
#[test]
fn kinds_are_domain_separated() {
    let body = b"the same body bytes".to_vec();
    for k1 in Kind::ALL {
        let sealed = Envelope::seal(&identity(4), k1, body.clone()).to_wire();
        let detached = sign_detached(&identity(4), k1, &body);
        for k2 in Kind::ALL {
            let relabelled = wire::Envelope { kind: k2.as_str().into(), ..sealed.clone() };
            let result = Envelope::from_wire(relabelled);
            if k1 == k2 {
                assert!(result.is_ok());
                assert!(verify_detached(&identity(4).public(), k2, &body, &detached));
            } else {
                assert_eq!(result.unwrap_err(), EnvelopeError::BadSignature, "{k1} verified as {k2}");
                assert!(!verify_detached(&identity(4).public(), k2, &body, &detached), "{k1} verified as {k2}");
            }
        }
    }
}

/// Every field of a contract body is covered by both signatures, and the
/// signatures cannot be swapped or borrowed from another contract.
#[test]
fn every_contract_field_is_covered_by_both_signatures() {
    let good = countersigned().to_wire();
    let limits = Limits::default();
    assert!(SignedContract::from_wire(good.clone(), &limits, true).is_ok());
    let body = wire::ContractBody::decode(good.body.as_slice()).unwrap();
    let edits: Vec<Edit<wire::ContractBody>> = vec![
        ("federation", Box::new(|b| b.federation.push('x'))),
        ("offer_id", Box::new(|b| b.offer_id.push('x'))),
        ("offer_seq", Box::new(|b| b.offer_seq += 1)),
        ("hold_id", Box::new(|b| b.hold_id[0] ^= 1)),
        ("negotiation_id", Box::new(|b| b.negotiation_id[0] ^= 1)),
        ("site", Box::new(|b| b.site.as_mut().unwrap().country = "FR".into())),
        ("flavour", Box::new(|b| b.flavour.as_mut().unwrap().name.push('x'))),
        ("units", Box::new(|b| b.units += 1)),
        ("price", Box::new(|b| b.unit_price_per_hour.as_mut().unwrap().micros += 1)),
        ("start", Box::new(|b| b.start_ms -= 1)),
        ("end", Box::new(|b| b.end_ms += 1)),
        ("created_at", Box::new(|b| b.created_at_ms += 1)),
    ];
    for (name, edit) in edits {
        let mut b = body.clone();
        edit(&mut b);
        let tampered = wire::SignedContract { body: b.encode_to_vec(), ..good.clone() };
        assert_eq!(
            SignedContract::from_wire(tampered, &limits, true).unwrap_err(),
            ContractError::BadConsumerSignature,
            "field {name}"
        );
    }
    // Parties swapped: signatures no longer match their claimed signers.
    let mut b = body.clone();
    std::mem::swap(&mut b.provider, &mut b.consumer);
    let swapped = wire::SignedContract { body: b.encode_to_vec(), ..good.clone() };
    assert!(SignedContract::from_wire(swapped, &limits, true).is_err());
    // Signatures swapped between the roles.
    let crossed = wire::SignedContract {
        consumer_signature: good.provider_signature.clone(),
        provider_signature: good.consumer_signature.clone(),
        ..good.clone()
    };
    assert_eq!(SignedContract::from_wire(crossed, &limits, true).unwrap_err(), ContractError::BadConsumerSignature);
    // A provider signature that is not over this body.
    let mut other_terms = contract_terms();
    other_terms.units = 4;
    let other_sig = sign_detached(&identity(1), Kind::Contract, &other_terms.encode());
    let borrowed = wire::SignedContract { provider_signature: other_sig.to_vec(), ..good.clone() };
    assert_eq!(SignedContract::from_wire(borrowed, &limits, true).unwrap_err(), ContractError::BadProviderSignature);
    // Missing countersignature where both are required.
    let unsigned = wire::SignedContract { provider_signature: vec![], ..good.clone() };
    assert_eq!(
        SignedContract::from_wire(unsigned, &limits, true).unwrap_err(),
        ContractError::MissingProviderSignature
    );
    // An envelope signature over the same body (another kind) is no contract signature.
    let env_sig = Envelope::seal(&identity(2), Kind::Commit, good.body.clone()).signature().to_vec();
    let confused = wire::SignedContract { consumer_signature: env_sig, ..good };
    assert_eq!(SignedContract::from_wire(confused, &limits, false).unwrap_err(), ContractError::BadConsumerSignature);
}

/// Every negotiation message round-trips through a signed envelope, and any
/// byte changed in it is rejected.
#[test]
fn negotiation_messages_round_trip_and_resist_tampering() {
    let limits = Limits::default();
    let consumer = identity(2);
    let messages = vec![
        Message::Propose(Propose {
            request_id: RequestId([1; 16]),
            negotiation_id: NegotiationId([2; 16]),
            round: 1,
            consumer: consumer.public(),
            provider: identity(1).public(),
            offer_id: "fra1-c8m32".into(),
            offer_seq: 4,
            units: 3,
            max_unit_price: Price::eur(1_000_000),
            start_ms: T0,
            duration_ms: HOUR_MS,
            expires_at_ms: T0 + 60_000,
        }),
        Message::Terminate(Terminate {
            request_id: RequestId([3; 16]),
            contract_id: ContractId([4; 32]),
            reason: TerminationReason::Breach,
            at_ms: T0,
            sender: consumer.public(),
        }),
        Message::StatusRequest(StatusRequest {
            request_id: RequestId([5; 16]),
            target: StatusTarget::Hold(HoldId([6; 16])),
        }),
        Message::Commit(fulcrum_protocol::messages::Commit {
            request_id: RequestId([9; 16]),
            hold_id: HoldId([7; 16]),
            contract: SignedContract::sign_as_consumer(&consumer, contract_terms().encode(), &limits).unwrap(),
        }),
    ];
    for m in messages {
        let bytes = m.seal(&consumer).encode();
        let (signer, back) = Message::decode(&bytes, &limits).unwrap();
        assert_eq!(signer, consumer.public());
        assert_eq!(back, m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(Message::decode(&b, &limits).is_err(), "{:?}: byte {i} changed and accepted", m.kind());
        }
    }
}

/// Each kind of malformed input gets its own typed error.
#[test]
fn malformed_inputs_each_get_their_own_error() {
    let limits = Limits::default();
    let good = offer_envelope();
    let good_wire = good.to_wire();
    let reseal = |kind: Kind, body: Vec<u8>| Envelope::seal(&identity(1), kind, body).encode();
    let offer_wire = wire::Offer::decode(good.body()).unwrap();
    let with_offer = |edit: &dyn Fn(&mut wire::Offer)| {
        let mut o = offer_wire.clone();
        edit(&mut o);
        reseal(Kind::Offer, o.encode_to_vec())
    };
    let verify = |bytes: &[u8]| SignedOffer::verify(bytes, FEDERATION, T0, &limits).unwrap_err();

    // Envelope level.
    let oversized = vec![0u8; limits.max_envelope_bytes + 1];
    assert!(matches!(verify(&oversized), OfferError::Envelope(EnvelopeError::TooLarge { .. })));
    let bytes = good.encode();
    assert!(matches!(verify(&bytes[..bytes.len() - 10]), OfferError::Envelope(EnvelopeError::Decode(_))));
    assert!(matches!(verify(&[0xff; 40]), OfferError::Envelope(EnvelopeError::Decode(_))));
    let unknown = wire::Envelope { kind: "offer-v2".into(), ..good_wire.clone() }.encode_to_vec();
    assert!(matches!(verify(&unknown), OfferError::Envelope(EnvelopeError::UnknownKind(k)) if k == "offer-v2"));
    let short_signer = wire::Envelope { signer: vec![1; 31], ..good_wire.clone() }.encode_to_vec();
    assert!(matches!(
        verify(&short_signer),
        OfferError::Envelope(EnvelopeError::Signer(KeyError::PublicKeyLength(31)))
    ));
    // A small-order point is not a usable key even though it decodes.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let weak_signer = wire::Envelope { signer: weak.to_vec(), ..good_wire.clone() }.encode_to_vec();
    assert!(matches!(verify(&weak_signer), OfferError::Envelope(EnvelopeError::Signer(KeyError::InvalidPublicKey))));
    let short_sig = wire::Envelope { signature: vec![1; 63], ..good_wire.clone() }.encode_to_vec();
    assert!(matches!(verify(&short_sig), OfferError::Envelope(EnvelopeError::Signer(KeyError::SignatureLength(63)))));
    let big_body =
        wire::Envelope { body: vec![0; Kind::Offer.max_body_len() + 1], ..good_wire.clone() }.encode_to_vec();
    assert!(matches!(verify(&big_body), OfferError::Envelope(EnvelopeError::BodyTooLarge { kind: Kind::Offer, .. })));
    let wrong_kind = reseal(Kind::Propose, good.body().to_vec());
    assert!(matches!(
        verify(&wrong_kind),
        OfferError::Envelope(EnvelopeError::WrongKind { expected: Kind::Offer, got: Kind::Propose })
    ));
    let garbage_body = reseal(Kind::Offer, vec![0xff; 20]);
    assert!(matches!(verify(&garbage_body), OfferError::Envelope(EnvelopeError::BodyDecode { kind: Kind::Offer, .. })));

    // Offer level.
    assert!(matches!(
        verify(&with_offer(&|o| {
            o.issued_at_ms = T0 - 2 * HOUR_MS;
            o.expires_at_ms = T0 - HOUR_MS;
        })),
        OfferError::Expired { .. }
    ));
    assert!(matches!(
        verify(&with_offer(&|o| {
            o.issued_at_ms = T0 + 10 * 60_000;
            o.expires_at_ms = T0 + HOUR_MS;
        })),
        OfferError::FutureDated { .. }
    ));
    assert!(matches!(verify(&with_offer(&|o| o.federation = "other".into())), OfferError::WrongFederation { .. }));
    assert!(matches!(
        verify(&with_offer(&|o| o.expires_at_ms = o.issued_at_ms + limits.max_offer_ttl_ms + 1)),
        OfferError::BadLifetime { .. }
    ));
    assert!(matches!(verify(&with_offer(&|o| o.site = None)), OfferError::Missing("site")));
    assert!(matches!(
        verify(&with_offer(&|o| o.site.as_mut().unwrap().country = "DEU".into())),
        OfferError::BadField { field: "site.country", .. }
    ));
    assert!(matches!(
        verify(&with_offer(&|o| o.labels = vec!["x".into(); limits.max_labels + 1])),
        OfferError::TooMany { what: "labels", .. }
    ));
    assert!(matches!(
        verify(&with_offer(&|o| o.min_duration_ms = o.max_duration_ms + 1)),
        OfferError::BadDurations { .. }
    ));
    assert!(matches!(verify(&with_offer(&|o| o.sla_permille = 1001)), OfferError::BadSla(1001)));
    assert!(matches!(
        verify(&with_offer(&|o| o.units_available = limits.max_units + 1)),
        OfferError::TooManyUnits { .. }
    ));

    // Message level.
    let propose_of = |consumer: Vec<u8>, request_id: Vec<u8>| {
        wire::Propose {
            request_id,
            negotiation_id: vec![2; 16],
            round: 0,
            consumer,
            provider: identity(1).public().to_bytes().to_vec(),
            offer_id: "o".into(),
            offer_seq: 1,
            units: 1,
            max_unit_price: Some(wire::Price { currency: "EUR".into(), micros: 1 }),
            start_ms: T0,
            duration_ms: HOUR_MS,
            expires_at_ms: T0 + 1,
        }
        .encode_to_vec()
    };
    let open = |bytes: Vec<u8>| Message::decode(&bytes, &limits).unwrap_err();
    let by_other = propose_of(identity(9).public().to_bytes().to_vec(), vec![1; 16]);
    assert!(matches!(open(reseal(Kind::Propose, by_other)), MessageError::SenderMismatch { kind: Kind::Propose, .. }));
    let short_rid = propose_of(identity(1).public().to_bytes().to_vec(), vec![1; 15]);
    assert!(matches!(
        open(reseal(Kind::Propose, short_rid)),
        MessageError::Field { kind: Kind::Propose, field: "request_id" }
    ));
    let both = wire::StatusRequest { request_id: vec![1; 16], contract_id: vec![2; 32], hold_id: vec![3; 16] };
    assert!(matches!(
        open(reseal(Kind::StatusRequest, both.encode_to_vec())),
        MessageError::Field { kind: Kind::StatusRequest, .. }
    ));
    assert!(matches!(open(good.encode()), MessageError::NotNegotiation(Kind::Offer)));
    let mut backwards = contract_terms();
    backwards.end_ms = backwards.start_ms;
    assert!(matches!(
        SignedContract::sign_as_consumer(&identity(2), backwards.encode(), &limits).unwrap_err(),
        ContractError::BadPeriod { .. }
    ));
    assert!(matches!(
        SignedContract::sign_as_consumer(&identity(3), contract_terms().encode(), &limits).unwrap_err(),
        ContractError::NotAParty(_)
    ));
}
