//! The three load modes: closed loop, fixed rate, many open streams.

use crate::*;

// ---------------------------------------------------------------------------------------------
// Modes

pub(crate) async fn closed_worker(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    issued: Rc<Cell<u64>>,
    t_start: Instant,
    t_end: Instant,
) {
    let mut conn: Option<Conn> = None;
    let mut gaps = Vec::new();
    while Instant::now() < t_end && issued.get() < o.max_requests {
        issued.set(issued.get() + 1);
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match timeout(o.timeout, connect(&o.addr)).await {
                Ok(Ok(c)) => c,
                _ => {
                    if Instant::now() >= t_start {
                        st.borrow_mut().error("connect");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        gaps.clear();
        let result = exchange_retrying(&mut c, reused, &o, &mut gaps, &st).await;
        let now = Instant::now();
        let measured = now >= t_start && now <= t_end;
        match result {
            Ok(Ok(out)) => {
                if measured {
                    st.borrow_mut().record(&o, &out, &gaps, None);
                }
                if out.keep_alive {
                    conn = Some(c);
                }
            }
            Ok(Err(e)) if measured => st.borrow_mut().error(e),
            Err(_) if measured => st.borrow_mut().error("timeout"),
            _ => {}
        }
    }
}

pub(crate) async fn run_closed(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    t_start: Instant,
    t_end: Instant,
) {
    let issued = Rc::new(Cell::new(0));
    let workers: Vec<_> = (0..o.concurrency)
        .map(|_| {
            tokio::task::spawn_local(closed_worker(
                o.clone(),
                st.clone(),
                issued.clone(),
                t_start,
                t_end,
            ))
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

pub(crate) async fn rate_one(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    pool: Rc<RefCell<Vec<Conn>>>,
    permits: Rc<Semaphore>,
    at: Instant,
    measured: bool,
) {
    let Ok(_permit) = permits.acquire().await else {
        return;
    };
    let pooled = pool.borrow_mut().pop();
    let reused = pooled.is_some();
    let mut c = match pooled {
        Some(c) => c,
        None => match timeout(o.timeout, connect(&o.addr)).await {
            Ok(Ok(c)) => c,
            _ => {
                if measured {
                    st.borrow_mut().error("connect");
                }
                return;
            }
        },
    };
    let mut gaps = Vec::new();
    let result = exchange_retrying(&mut c, reused, &o, &mut gaps, &st).await;
    let sched = at.elapsed();
    match result {
        Ok(Ok(out)) => {
            if measured {
                st.borrow_mut().record(&o, &out, &gaps, Some(sched));
            }
            if out.keep_alive {
                pool.borrow_mut().push(c);
            }
        }
        Ok(Err(e)) if measured => st.borrow_mut().error(e),
        Err(_) if measured => st.borrow_mut().error("timeout"),
        _ => {}
    }
}

pub(crate) async fn run_rate(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    t0: Instant,
    t_start: Instant,
    t_end: Instant,
) {
    let interval_ns = (1e9 / o.rate) as u64;
    let pool = Rc::new(RefCell::new(Vec::new()));
    let permits = Rc::new(Semaphore::new(o.concurrency));
    let mut i = 0u64;
    loop {
        let at = t0 + Duration::from_nanos(i * interval_ns);
        if at >= t_end || i >= o.max_requests {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let measured = at >= t_start;
        tokio::task::spawn_local(rate_one(
            o.clone(),
            st.clone(),
            pool.clone(),
            permits.clone(),
            at,
            measured,
        ));
        i += 1;
    }
    // Every request still running holds a permit.
    let all = u32::try_from(o.concurrency).unwrap_or(u32::MAX);
    let _ = timeout(o.timeout, permits.acquire_many(all)).await;
}

#[derive(Default)]
pub(crate) struct HoldState {
    pub(crate) open_now: Cell<usize>,
    pub(crate) max_open: Cell<usize>,
    pub(crate) all_open_at: Cell<Option<Instant>>,
}

pub(crate) async fn hold_one(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    hold: Rc<HoldState>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let mut c = match timeout(o.timeout, connect(&o.addr)).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => return st.borrow_mut().error("connect"),
        Err(_) => return st.borrow_mut().error("connect_timeout"),
    };
    let mut gaps = Vec::new();
    let mut opened = false;
    let result = {
        let on_head = || {
            opened = true;
            permit.take();
            let now = hold.open_now.get() + 1;
            hold.open_now.set(now);
            if now > hold.max_open.get() {
                hold.max_open.set(now);
                if now >= o.concurrency {
                    hold.all_open_at.set(Some(Instant::now()));
                }
            }
        };
        timeout(o.timeout, exchange(&mut c, &o, &mut gaps, on_head)).await
    };
    if opened {
        hold.open_now.set(hold.open_now.get() - 1);
    }
    match result {
        Ok(Ok(out)) => st.borrow_mut().record(&o, &out, &gaps, None),
        Ok(Err(e)) => st.borrow_mut().error(e),
        Err(_) => st.borrow_mut().error("timeout"),
    }
}

pub(crate) async fn run_hold(o: Rc<Opts>, st: Rc<RefCell<Stats>>, hold: Rc<HoldState>) {
    let ramp = std::sync::Arc::new(Semaphore::new(o.connect_parallel));
    let mut tasks = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency {
        let Ok(permit) = ramp.clone().acquire_owned().await else {
            break;
        };
        tasks.push(tokio::task::spawn_local(hold_one(
            o.clone(),
            st.clone(),
            hold.clone(),
            permit,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}
