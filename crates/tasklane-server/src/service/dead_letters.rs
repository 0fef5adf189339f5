//! Dead letters: tasks that gave up (from any queue, through any API), kept with their
//! request and every attempt, to inspect, redrive (a new attempt series under the same
//! name) or purge. Expired by `--dead-letter-retention` through maintenance.

use std::sync::Arc;

use tasklane_core::{Clock, QueueName, Status};
use tasklane_store::{DeadLetter, DeadLetterList, DeadLetterRedrive, DeadLetterSelect, Redriven, Store};

use crate::dispatch::Dispatcher;
use crate::jobs::queue_name;
use crate::page_token;
use crate::service::store_status;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Clone)]
pub struct DeadLetters {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
}

impl DeadLetters {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, dispatcher: Dispatcher) -> DeadLetters {
        DeadLetters { store, clock, dispatcher }
    }

    async fn queue(&self, queue: &str) -> Result<QueueName, Status> {
        let name = queue_name(queue)?;
        self.store
            .queue_get(&name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("Queue \"{name}\" was not found.")))?;
        Ok(name)
    }

    pub async fn list(
        &self,
        queue: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeadLetter>, String), Status> {
        let queue = self.queue(queue).await?;
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match page_token {
            "" => None,
            t => Some(page_token::decode(t)?.parse::<i64>().map_err(|_| page_token::invalid())?),
        };
        let mut dead = self
            .store
            .dead_letter_list(DeadLetterList { queue, after, limit: limit + 1 })
            .await
            .map_err(store_status)?;
        let next = if dead.len() > limit {
            dead.truncate(limit);
            dead.last().map(|d| page_token::encode(&d.id.to_string())).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((dead, next))
    }

    pub async fn get(&self, queue: &str, id: i64) -> Result<DeadLetter, Status> {
        let queue = self.queue(queue).await?;
        self.store
            .dead_letter_get(&queue, id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("Dead letter {id} was not found in {queue}.")))
    }

    pub async fn redrive(&self, queue: &str, select: DeadLetterSelect) -> Result<Redriven, Status> {
        let queue = self.queue(queue).await?;
        let redriven = self
            .store
            .dead_letter_redrive(DeadLetterRedrive { queue: queue.clone(), select, now: self.clock.now() })
            .await
            .map_err(store_status)?;
        if !redriven.tasks.is_empty() {
            self.dispatcher.task_created(&queue);
        }
        Ok(redriven)
    }

    pub async fn purge(&self, queue: &str, select: DeadLetterSelect) -> Result<u64, Status> {
        let queue = self.queue(queue).await?;
        self.store.dead_letter_purge(&queue, select).await.map_err(store_status)
    }
}
