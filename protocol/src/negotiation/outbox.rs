//! Terminations this node sent that the other party has not acknowledged
//! yet, for either role. A Terminate is durable in our log before it is sent;
//! until the peer answers `Terminated` it is sent again (backing off), so a
//! lost message cannot leave the other side holding the contract as active.
//! Bounded: one entry per contract, dropped once the contract's end passes.

use std::collections::HashMap;

use super::Outgoing;
use crate::envelope::Envelope;
use crate::ids::ContractId;
use crate::keys::PublicKey;
use crate::limits::Limits;
use crate::messages::Message;

#[derive(Debug, Clone)]
struct Unacknowledged {
    to: PublicKey,
    message: Message,
    end_ms: u64,
    sent_at_ms: u64,
    attempts: u32,
}

/// Unacknowledged terminations by contract.
#[derive(Debug, Default)]
pub(crate) struct TerminationOutbox {
    pending: HashMap<ContractId, Unacknowledged>,
}

impl TerminationOutbox {
    /// Remembers a Terminate just sent to `to` for a contract ending at `end_ms`.
    pub(crate) fn sent(&mut self, contract_id: ContractId, to: PublicKey, message: Message, end_ms: u64, now_ms: u64) {
        self.pending.insert(contract_id, Unacknowledged { to, message, end_ms, sent_at_ms: now_ms, attempts: 0 });
    }

    /// Re-arms a termination found in the log at start-up (our own signed
    /// Terminate); it is sent again at the next tick.
    pub(crate) fn restore(&mut self, envelope: &Envelope, to: PublicKey, end_ms: u64, limits: &Limits) {
        if let Ok(message @ Message::Terminate(_)) = Message::open(envelope, limits)
            && let Message::Terminate(t) = &message
        {
            let id = t.contract_id;
            self.pending.insert(id, Unacknowledged { to, message, end_ms, sent_at_ms: 0, attempts: 0 });
        }
    }

    /// The peer acknowledged.
    pub(crate) fn acknowledged(&mut self, contract_id: &ContractId) {
        self.pending.remove(contract_id);
    }

    /// Terminations due to be sent again at `now_ms`. After
    /// `max_status_attempts` tries the interval doubles, up to 64 times the
    /// reply timeout; once the contract has ended there is nothing to stop.
    pub(crate) fn due(&mut self, now_ms: u64, limits: &Limits) -> Vec<Outgoing> {
        self.pending.retain(|_, u| u.end_ms > now_ms);
        let mut out = Vec::new();
        for u in self.pending.values_mut() {
            let extra = u.attempts.saturating_sub(limits.max_status_attempts).min(6);
            if now_ms >= u.sent_at_ms.saturating_add(limits.reply_timeout_ms << extra) {
                u.sent_at_ms = now_ms;
                u.attempts = u.attempts.saturating_add(1);
                out.push(Outgoing { to: u.to, message: u.message.clone() });
            }
        }
        out
    }
}
