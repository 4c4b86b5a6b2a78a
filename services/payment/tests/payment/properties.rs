//! The property over the real wire and store: random sequences of payment
//! operations on a few orders — each request sent several times at once with
//! the same request id, ids reused with other content, a provider timeout
//! settled by the reconciler, automatic release racing confirmations — keep
//! the ledger balanced, never take more out of escrow than was paid in, and
//! book each movement once. Fixed seed; a failure prints the minimal
//! sequence.

use std::collections::HashMap;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, with_token};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use uuid::Uuid;

use crate::support::*;

#[derive(Debug, Clone)]
enum Operation {
    Pay(&'static str),
    Ship,
    Confirm,
    Refund(Option<i64>),
    Dispute,
    Resolve(pb::DisputeResolution, i64),
}

#[derive(Debug, Clone)]
struct Step {
    order: usize,
    key: u8,
    operation: Operation,
    copies: usize,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let operation = prop_oneof![
        4 => prop_oneof![
            Just("tok_sandbox_success"),
            Just("tok_sandbox_success"),
            Just("tok_sandbox_decline"),
            Just("tok_sandbox_timeout"),
        ]
        .prop_map(Operation::Pay),
        2 => Just(Operation::Ship),
        2 => Just(Operation::Confirm),
        2 => proptest::option::of(1_i64..12_000).prop_map(Operation::Refund),
        2 => Just(Operation::Dispute),
        2 => (
            prop_oneof![
                Just(pb::DisputeResolution::Refund),
                Just(pb::DisputeResolution::PartialRefund),
                Just(pb::DisputeResolution::Release),
            ],
            1_i64..12_000
        )
            .prop_map(|(resolution, cents)| Operation::Resolve(resolution, cents)),
    ];
    proptest::collection::vec(
        (0_usize..3, 0_u8..3, operation, 1_usize..4).prop_map(|(order, key, operation, copies)| {
            Step {
                order,
                key,
                operation,
                copies,
            }
        }),
        4..24,
    )
}

fn cents(cents: i64) -> pb::Money {
    usd(&format!("{}.{:02}", cents / 100, cents % 100))
}

/// One outcome, comparable across copies: the answer's order status or the
/// refusal's reason.
type Outcome = Result<i32, String>;

async fn send(world: &World, orders: &[pb::Order], case: u64, step: &Step) -> Vec<Outcome> {
    let order = &orders[step.order];
    let request_id = format!("c{case}-o{}-k{}", step.order, step.key);
    // One dispute id for every copy (a random one when there is none yet).
    let dispute_id = get_order(world, &order.order_id)
        .await
        .order
        .map(|order| order.dispute_id)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..step.copies {
        let mut client = world.client.clone();
        let buyer = world.buyer_token.clone();
        let seller = world.seller_token.clone();
        let admin = world.admin_token.clone();
        let order = order.clone();
        let operation = step.operation.clone();
        let request_id = request_id.clone();
        let dispute_id = dispute_id.clone();
        tasks.spawn(async move {
            let status_of = |order: Option<pb::Order>| order.map_or(0, |order| order.status);
            let answer = match operation {
                Operation::Pay(card) => client
                    .pay_order(with_token(pay_request(&order, card, &request_id), &buyer))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
                Operation::Ship => client
                    .mark_shipped(with_token(
                        pb::MarkShippedRequest {
                            request_id,
                            order_id: order.order_id.clone(),
                            ..pb::MarkShippedRequest::default()
                        },
                        &seller,
                    ))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
                Operation::Confirm => client
                    .confirm_receipt(with_token(
                        pb::ConfirmReceiptRequest {
                            request_id,
                            order_id: order.order_id.clone(),
                        },
                        &buyer,
                    ))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
                Operation::Refund(amount) => client
                    .refund_order(with_token(
                        pb::RefundOrderRequest {
                            request_id,
                            order_id: order.order_id.clone(),
                            amount: amount.map(cents),
                            reason: "property".to_owned(),
                        },
                        &seller,
                    ))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
                Operation::Dispute => client
                    .open_dispute(with_token(
                        pb::OpenDisputeRequest {
                            request_id,
                            order_id: order.order_id.clone(),
                            reason: pb::DisputeReason::NotAsDescribed as i32,
                            description: "property".to_owned(),
                        },
                        &buyer,
                    ))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
                Operation::Resolve(resolution, amount) => client
                    .resolve_dispute(with_token(
                        pb::ResolveDisputeRequest {
                            request_id,
                            dispute_id,
                            resolution: resolution as i32,
                            refund_amount: (resolution == pb::DisputeResolution::PartialRefund)
                                .then(|| cents(amount)),
                            note: "property".to_owned(),
                        },
                        &admin,
                    ))
                    .await
                    .map(|answer| status_of(answer.into_inner().order)),
            };
            answer.map_err(|status| reason(&status))
        });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    outcomes
}

/// Checks the books; returns how many postings of each type the orders have.
async fn check(world: &World, orders: &[pb::Order]) -> HashMap<i32, usize> {
    let mut seen = HashMap::new();
    // Let in-flight attempts settle first (the reconciler resolves them).
    let deadline = tokio::time::Instant::now() + WAIT;
    while reconcile(world)
        .await
        .currencies
        .iter()
        .any(|currency| currency.pending_payment_count > 0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attempts stay PENDING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_balanced(world).await;
    for order in orders {
        let booked = entries(world, &order.order_id).await;
        let mut postings: HashMap<(i32, String), ()> = HashMap::new();
        let (mut escrow_in, mut escrow_out) = (0_i64, 0_i64);
        for entry in &booked {
            postings.insert((entry.posting_type, entry.posting_id.clone()), ());
            let minor: i64 = entry
                .amount
                .as_ref()
                .unwrap()
                .amount
                .replace('.', "")
                .parse()
                .unwrap();
            if entry.account.as_ref().unwrap().account_type == pb::LedgerAccountType::Escrow as i32
            {
                if entry.direction == pb::EntryDirection::Credit as i32 {
                    escrow_in += minor;
                } else {
                    escrow_out += minor;
                }
            }
        }
        for posting_type in [
            pb::PostingType::PaymentCaptured,
            pb::PostingType::EscrowReleased,
            pb::PostingType::Refund,
        ] {
            let count = postings
                .keys()
                .filter(|(kind, _)| *kind == posting_type as i32)
                .count();
            assert!(count <= 1, "{posting_type:?} booked {count} times");
            *seen.entry(posting_type as i32).or_default() += count;
        }
        assert!(
            escrow_out <= escrow_in,
            "released {escrow_out} of {escrow_in} paid"
        );
        assert!(escrow_in <= 10_650, "paid more than the total due");
    }
    seen
}

fn property(backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(world(backend, |config| {
        config.payment.provider_timeout_ms = 50;
        config.payment.provider_max_calls = 1;
        config.payment.attempt_reconcile_after_ms = 100;
        config.payment.sandbox_settle_after_ms = 150;
        config.payment.auto_release_ms = 150;
    }));
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    // Every run (shrinking reruns too) gets fresh orders and request ids.
    let runs = std::sync::atomic::AtomicU64::new(0);
    let seen = std::sync::Mutex::new(HashMap::<i32, usize>::new());
    let outcome = runner.run(&steps(), |steps| {
        let case = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(async {
            let mut orders = Vec::new();
            for _ in 0..3 {
                orders.push(new_order(&world, "100.00").await);
            }
            for step in &steps {
                let outcomes = send(&world, &orders, case, step).await;
                // Copies of one non-payment request get one answer (a
                // payment copy may see the attempt still in flight).
                if !matches!(step.operation, Operation::Pay(_)) {
                    assert!(
                        outcomes.windows(2).all(|pair| pair[0] == pair[1]),
                        "copies answered differently: {outcomes:?}"
                    );
                }
            }
            let booked = check(&world, &orders).await;
            let mut seen = seen.lock().unwrap();
            for (kind, count) in booked {
                *seen.entry(kind).or_default() += count;
            }
        });
        Ok(())
    });
    runtime.block_on(world.app.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    // The sequences really moved money every way (not a vacuous pass).
    let seen = seen.into_inner().unwrap();
    for posting_type in [
        pb::PostingType::PaymentCaptured,
        pb::PostingType::EscrowReleased,
        pb::PostingType::Refund,
    ] {
        assert!(
            seen.get(&(posting_type as i32)).copied().unwrap_or(0) > 0,
            "no {posting_type:?} in any case: {seen:?}"
        );
    }
    eprintln!("postings booked across the cases: {seen:?}");
}

// Proves the property on SQLite.
#[test]
fn random_operations_keep_the_books_balanced_on_sqlite() {
    property(Backend::Sqlite, 16);
}

// Proves the property on PostgreSQL.
#[test]
fn random_operations_keep_the_books_balanced_on_postgres() {
    property(Backend::Postgres, 10);
}
