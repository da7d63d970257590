//! `GET /api/v1/live`: the live view's stream (server-sent events): each camera's latest
//! picture (see `crate::ui::live`) as it comes, a `data:` line of JSON per picture. A client that
//! reads slowly gets the newest picture when it is ready again, never a backlog. Read with
//! `fetch` (the bearer token goes in a header; `EventSource` cannot send one).

use super::error::ApiError;
use super::router::Shared;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;

pub async fn stream(State(s): State<Shared>) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let view = s.live.get().ok_or_else(|| ApiError::Unavailable("the station is still starting".into()))?;
    let mut watching = view.subscribe();
    let cameras = std::mem::take(&mut watching.pictures).into_iter().map(|rx| {
        stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let picture = rx.borrow_and_update().clone();
            Some((picture, rx))
        })
        .boxed()
    });
    // The subscription lives as long as the stream: the tap copies parts while a client reads.
    let events = stream::select_all(cameras).filter_map(move |picture| {
        let _watching = &watching;
        async move { picture.map(|json| Ok(Event::default().event("picture").data(&*json))) }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}
