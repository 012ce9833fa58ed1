//! `fulcrumctl placements ...`: the composite placements this node made,
//! each as its latest record in the log says, and terminating all of a
//! placement's contracts at once.

use clap::{Subcommand, ValueEnum};
use fulcrum_proto::v1 as wire;

use super::view::PlacementView;
use super::{CliError, Output, ReasonArg, answer, render};
use crate::admin::client::{self, Admin, AdminTarget};

/// `fulcrumctl placements ...`.
#[derive(Debug, Subcommand)]
pub enum PlacementsCommand {
    /// List this node's composite placements
    List,
    /// Show one placement: what was asked, how it ended, its contracts
    Show {
        /// Placement id (32 hex digits, or a unique prefix of 8 or more)
        #[arg(value_name = "ID", value_parser = placement_ref)]
        id: PlacementRef,
    },
    /// Terminate every active contract of a placement
    Terminate {
        /// Placement id (32 hex digits, or a unique prefix of 8 or more)
        #[arg(value_name = "ID", value_parser = placement_ref)]
        id: PlacementRef,
        /// Why
        #[arg(long, value_enum, value_name = "CODE")]
        reason: ReasonArg,
    },
}

/// A placement named on the command line: the full id, or a prefix to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementRef {
    /// All 16 bytes.
    Id(Vec<u8>),
    /// At least 8 lower-case hex digits.
    Prefix(String),
}

/// Placement ids are 32 hex digits; a prefix of 8 or more is resolved
/// against `placements list`.
fn placement_ref(s: &str) -> Result<PlacementRef, String> {
    let lower = s.to_ascii_lowercase();
    if !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a placement id (32 hex digits, or a unique prefix of 8 or more)"));
    }
    match lower.len() {
        32 => hex::decode(&lower).map(PlacementRef::Id).map_err(|e| e.to_string()),
        8..=31 => Ok(PlacementRef::Prefix(lower)),
        n => Err(format!("{s:?} has {n} hex digits; give the 32-digit placement id or a unique prefix of 8 or more")),
    }
}

/// Runs one `placements` command.
pub(super) async fn run(socket: &AdminTarget, out: &Output, command: PlacementsCommand) -> Result<(), CliError> {
    let mut c = client::connect(socket).await?;
    match command {
        PlacementsCommand::List => {
            let list = answer(c.list_placements(wire::ListPlacementsRequest {})).await?;
            let mut views: Vec<PlacementView> = list.placements.into_iter().map(PlacementView::from).collect();
            views.sort_by_key(|p| p.started_at_ms);
            out.show(&views, |v| render::placements(v))
        }
        PlacementsCommand::Show { id } => {
            let placement_id = resolve(&mut c, id).await?;
            let view = PlacementView::from(answer(c.show_placement(wire::PlacementQuery { placement_id })).await?);
            out.show(&view, render::placement)
        }
        PlacementsCommand::Terminate { id, reason } => {
            let placement_id = resolve(&mut c, id).await?;
            let request = wire::TerminatePlacementRequest { placement_id, reason: reason.to_wire() as i32 };
            let view = PlacementView::from(answer(c.terminate_placement(request)).await?);
            out.show(&view, |v| {
                let reason = reason.to_possible_value().map(|p| p.get_name().to_owned()).unwrap_or_default();
                let active = v.contracts.iter().filter(|c| c.state == "active").count();
                format!(
                    "terminated placement {} ({reason}): {} contracts, {active} still active\n",
                    v.placement_id,
                    v.contracts.len()
                )
            })
        }
    }
}

/// Turns a unique prefix into the full id by asking for every placement.
async fn resolve(client: &mut Admin, id: PlacementRef) -> Result<Vec<u8>, CliError> {
    let prefix = match id {
        PlacementRef::Id(id) => return Ok(id),
        PlacementRef::Prefix(prefix) => prefix,
    };
    let list = answer(client.list_placements(wire::ListPlacementsRequest {})).await?;
    let mut found =
        list.placements.into_iter().map(|p| p.placement_id).filter(|id| hex::encode(id).starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => {
            Err(CliError::Failed(format!("no placement id starts with {prefix}; see 'fulcrumctl placements list'")))
        }
        (Some(_), Some(_)) => {
            Err(CliError::Failed(format!("{prefix} matches {} placements; give more digits", 2 + found.count())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_refs() {
        assert_eq!(placement_ref(&"AB".repeat(16)), Ok(PlacementRef::Id(vec![0xab; 16])));
        assert_eq!(placement_ref("DEADBEEF"), Ok(PlacementRef::Prefix("deadbeef".into())));
        assert!(placement_ref("deadbee").is_err());
        assert!(placement_ref(&"a".repeat(33)).is_err());
        assert!(placement_ref("deadbeefxx").is_err());
    }
}
