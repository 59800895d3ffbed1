//! The Lua scripts the backend runs in Redis, where a step must be atomic: cancelling a job only
//! if no worker has it, reclaiming the jobs of lost workers (and counting who lost them), and
//! the client's check, after a reconnection, of which of its jobs Redis still has.
//!
//! Scripts are sent by hash and re-sent in full when Redis does not know them (after a restart),
//! by the `redis` crate's `Script`. They must never loop over more than their arguments, a
//! `COUNT` they are given or the group's consumers (one per worker), and every key they write
//! gets an expiry.

use std::sync::OnceLock;

use redis::Script;

/// Cancels a job still waiting in the stream: deletes the entry unless a worker has read it.
/// KEYS: the job stream. ARGV: the group, the entry id. Returns 1 if deleted (no worker will
/// ever run it), 0 if a worker has it or it is gone.
pub(crate) fn cancel_pending() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r"
            local ok, held = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
            if ok and #held > 0 then return 0 end
            return redis.call('XDEL', KEYS[1], ARGV[2])
            ",
        )
    })
}

/// Takes over the jobs of lost workers, and forgets workers that hold nothing and are gone.
///
/// A job is taken when it has been idle (not delivered again) for at least the lease and the
/// worker that holds it has no record (its heartbeat lapsed). Each taken job's list of the
/// workers that lost it gets the previous holder.
///
/// The script walks the group's consumers (`XINFO CONSUMERS`: one per worker, live or recently
/// lost, since empty lost ones are deleted here) and asks `XPENDING ... IDLE` only about those
/// whose record lapsed: a live worker's long jobs never fill the page ahead of a lost one's. It
/// looks at no more pending entries than the most jobs to take, in all: Redis runs nothing else
/// meanwhile, so one call never walks a long pending list; the next heartbeat goes on.
///
/// KEYS: the job stream. ARGV: the group, this worker's name, the lease in ms, the most jobs to
/// take, the worker record prefix, the attempts prefix, the attempts expiry in ms.
/// Returns `[[id, [field, value...], [lost worker...]]...]`.
pub(crate) fn reclaim() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r"
            local group, me, lease, budget = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
            local out = {}
            local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], group)
            if not ok then return out end
            for _, c in ipairs(consumers) do
                local name, held = nil, nil
                for i = 1, #c - 1, 2 do
                    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then held = c[i + 1] end
                end
                if name and name ~= me and redis.call('EXISTS', ARGV[5] .. name) == 0 then
                    if held == 0 then
                        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, name)
                    elseif budget > 0 then
                        local pending = redis.call('XPENDING', KEYS[1], group, 'IDLE', lease, '-', '+', budget, name)
                        budget = budget - #pending
                        for _, p in ipairs(pending) do
                            local id = p[1]
                            local claimed = redis.call('XCLAIM', KEYS[1], group, me, lease, id)
                            local entry = claimed[1]
                            if entry and entry ~= false and entry[2] then
                                local attempts = ARGV[6] .. id
                                redis.call('RPUSH', attempts, name)
                                redis.call('PEXPIRE', attempts, ARGV[7])
                                table.insert(out, {entry[1], entry[2], redis.call('LRANGE', attempts, 0, -1)})
                            else
                                -- deleted since it was read: nothing to run, nothing to keep
                                redis.call('XACK', KEYS[1], group, id)
                            end
                        end
                    end
                end
            end
            return out
            ",
        )
    })
}

/// Which of a client's jobs the stream no longer has, and the last id of its result stream,
/// at one instant: after reading results up to that id, a job in the first list without a
/// result is lost (Redis came back without it).
///
/// KEYS: the job stream, the client's result stream. ARGV: the entry ids.
/// Returns `[last result id, [missing id...]]`.
pub(crate) fn missing_jobs() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r"
            local missing = {}
            for _, id in ipairs(ARGV) do
                if #redis.call('XRANGE', KEYS[1], id, id) == 0 then table.insert(missing, id) end
            end
            local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
            local last_id = '0-0'
            if #last > 0 then last_id = last[1][1] end
            return {last_id, missing}
            ",
        )
    })
}
