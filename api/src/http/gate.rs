//! The order in which requests reach the database.
//!
//! r2d2 hands a returned connection to whichever thread asks first, so under load a request
//! that has waited long can lose its turn again and again to newcomers: the latency tail
//! grows while the mean stays put. Requests therefore first take a turn here (a FIFO
//! semaphore with one permit per pooled connection) and only then check out a connection,
//! which is then free for them. Waiting for a turn costs no thread: it happens on the HTTP
//! worker, before the blocking task starts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// One permit per connection of the request pool; waiters are served in arrival order.
pub struct Gate {
    turns: Arc<Semaphore>,
    wait: Duration,
}

/// A request's turn at the pool; the next waiter's starts when it is dropped.
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gate {
    /// `size` turns at once (the pool's size); a request waits at most `wait` for one.
    pub fn new(size: u32, wait: Duration) -> Self {
        Gate {
            turns: Arc::new(Semaphore::new(size.max(1) as usize)),
            wait,
        }
    }

    /// Waits for this request's turn (503 after the configured database timeout).
    pub async fn turn(&self) -> Result<Turn, ApiError> {
        // A free permit means nobody is queued (released permits go to waiters first).
        if let Ok(permit) = self.turns.clone().try_acquire_owned() {
            return Ok(Turn(permit));
        }
        match actix_web::rt::time::timeout(self.wait, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn(permit)),
            Ok(Err(_)) => Err(ApiError::Unavailable(
                "no database connection: the server is shutting down".into(),
            )),
            Err(_) => Err(ApiError::Unavailable(format!(
                "no database connection: every one stayed busy for {:?} (ERS_DB_TIMEOUT_SECS)",
                self.wait
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[actix_web::test]
    async fn waiters_get_their_turn_in_arrival_order() {
        let gate = Rc::new(Gate::new(1, Duration::from_secs(5)));
        let first = gate.turn().await.expect("a free turn");
        let served = Rc::new(RefCell::new(Vec::new()));
        let mut waiting = Vec::new();
        for n in 0..5 {
            let (gate, served) = (gate.clone(), served.clone());
            waiting.push(actix_web::rt::spawn(async move {
                let turn = gate.turn().await.expect("a turn in time");
                served.borrow_mut().push(n);
                // Each holds its turn across a yield, so a later waiter could overtake it
                // if the gate were not first come, first served.
                actix_web::rt::task::yield_now().await;
                drop(turn);
            }));
            // The waiter queues before the next one is spawned.
            actix_web::rt::task::yield_now().await;
        }
        drop(first);
        for w in waiting {
            w.await.expect("the waiter finishes");
        }
        assert_eq!(*served.borrow(), vec![0, 1, 2, 3, 4]);
    }

    #[actix_web::test]
    async fn a_request_that_waits_too_long_is_told_the_database_is_busy() {
        let gate = Gate::new(1, Duration::from_millis(50));
        let _held = gate.turn().await.expect("a free turn");
        match gate.turn().await {
            Err(ApiError::Unavailable(msg)) => {
                assert!(msg.contains("every one stayed busy"), "{msg}")
            }
            Err(other) => panic!("expected 503, got {other}"),
            Ok(_) => panic!("a second turn while the only one is held"),
        }
    }
}
