//! A decision's seat is given back by that decision only (finding 16 of
//! the nemesis, `docs/nemesis.md`): a decision whose call then goes
//! nowhere (too late to send, its claim lost, refused) gives back the seat
//! it reserved, never the one a later decision for the same chat and agent
//! took meanwhile. Run against both backends, as the store's other cases.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::domain::ChatId;
use assignd::store::{Assigned, StoredRouting};

use store_fixture::*;

/// A seat for `chat` with carol, the pick that moved pool `support` to her.
fn carols_seat(chat: i64) -> Assigned {
    Assigned {
        round_robin: Some(("support".into(), "carol".into())),
        opened: Some((ChatId(chat), "carol".into())),
        ..Assigned::default()
    }
}

/// Reserves `seat` under the routing lock, as a decision does; its mark.
async fn reserve(f: &Fixture, seat: &Assigned) -> i64 {
    let (held, _) = f.store.lock_routing().await.unwrap();
    held.reserve(seat).await.unwrap()
}

/// carol's seats, and who has pool `support`'s rotation.
async fn carol(f: &Fixture) -> (Option<u32>, Option<String>) {
    let StoredRouting {
        open, last_pick, ..
    } = f.store.load_routing().await.unwrap();
    (
        open.get("carol").copied(),
        last_pick.get("support").cloned(),
    )
}

/// Seed 23 of the nemesis: daemon 1 reserved carol's seat for chat 3 and
/// was stopped before its call; daemon 2, once daemon 1's claim ran out,
/// read the chat (not applied: the seat given back), decided again (carol
/// again) and assigned it. Daemon 1, resumed, found its call too late to
/// send and gave its seat back: carol's seat for chat 3, confirmed or still
/// reserved by daemon 2, and the rotation daemon 2 moved, stay.
async fn a_late_decision_gives_back_its_own_seat_only(f: Fixture) {
    let back = Some(("support", Some("bob")));
    let first = reserve(&f, &carols_seat(3)).await;
    // Daemon 2 reads the chat of daemon 1's call in doubt: not applied.
    f.store
        .unreserve(ChatId(3), "carol", None, None)
        .await
        .unwrap();
    reserve(&f, &carols_seat(3)).await;
    f.store
        .unreserve(ChatId(3), "carol", Some(first), back)
        .await
        .unwrap();
    let kept = (Some(1), Some("carol".to_string()));
    assert_eq!(carol(&f).await, kept, "daemon 2's reserved seat stays");
    // Daemon 2's call is applied and settled: the seat is confirmed.
    settle_assigned(&f, 3, carols_seat(3)).await;
    f.store
        .unreserve(ChatId(3), "carol", Some(first), back)
        .await
        .unwrap();
    assert_eq!(carol(&f).await, kept, "daemon 2's confirmed seat stays");
    // A decision gives back its own seat, and the rotation with it.
    let own = reserve(&f, &carols_seat(4)).await;
    f.store
        .unreserve(ChatId(4), "carol", Some(own), back)
        .await
        .unwrap();
    assert_eq!(carol(&f).await, (Some(1), Some("bob".to_string())));
}

both!(a_late_decision_gives_back_its_own_seat_only);
