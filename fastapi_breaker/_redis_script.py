"""The fleet's keys and its one server-side script, as text: the standard library only.

`fastapi_breaker.redis` runs `SCRIPT` with redis-py; nothing here does I/O. One call of the
script, for one breaker, by one process:

    EVALSHA SCRIPT_SHA 3 <window key> <state key> <sequence key> <ARGV 1..16>

with the keys from `keys_for(namespace, name)` and `sequence_key_for(namespace, name,
process_id)`, and ARGV in this order (`script_args` builds it):

     1 process_id        this process's id (any string); the trial's lease names it
     2 successes         calls that succeeded here since the last call, added to the window
     3 failures          calls that failed here since the last call
     4 rejections        calls refused here since the last call (kept in the window, not decided on)
     5 want_trial        1 when this process would run the trial if the fleet's reset is due
     6 trial_outcome     "", "ok" or "fail": the trial's end, from the lease holder only
     7 window_ms         the rolling window's length
     8 buckets           how many buckets the window has (window_ms // buckets >= 1 ms each)
     9 threshold_pct     the fleet opens when 100 * failures / calls > threshold_pct ...
    10 volume_threshold  ... and calls >= volume_threshold (and > 0), over the fleet's window
    11 reset_ms          how long the fleet stays open before a trial
    12 lease_ms          how long a trial's holder has before another process may take over
    13 max_trials        the permits the holder gets (half_open_max_calls)
    14 channel           where transitions are published: `channel_for(namespace)`
    15 name              the breaker's name, published with each transition
    16 sequence          this flush's number, one more than the last for this process and
                         breaker; a number already taken adds nothing (a flush sent again after
                         a lost answer). 0 for a read, which is never deduplicated.

The reply is `[state, remaining_ms, generation, trials, holder, repaired]` (`parse_reply`).
Only the Redis server's clock (`TIME`) decides; no time is passed in. A read, to learn the
fleet's state without adding anything, is the same script with zero counts, want_trial 0 and no
outcome: it then writes nothing (only garbage found in the keys is deleted), and it publishes
nothing.

After a Redis restart the script is gone and EVALSHA answers NOSCRIPT (redis-py raises
`NoScriptError`, or returns it from a pipeline run with `raise_on_error=False`): the caller runs
`SCRIPT LOAD SCRIPT` (which answers `SCRIPT_SHA`) and sends the same calls again.

Nothing read from Redis is trusted: a key of the wrong type, a field that is missing or not a
non-negative integer, an unknown state, is deleted and taken as "no fleet state" (a fresh closed
breaker), and the reply says `repaired`. The keys hold:

- window key, a string of `buckets` records of 20 bytes, little-endian: bucket i holds its epoch
  (server ms // bucket width, int64) and its successes, failures and rejections (uint32, which
  saturate); it counts while its epoch is one of the last `buckets` ones and == i mod buckets.
  The key expires a window after its last write, so an idle breaker holds nothing. Every
  process of a namespace must use the same `buckets`: a string of another length is reset.
- state key, a hash: `state`, `opened_until` (server ms), `holder`, `lease_until` (server ms),
  `generation` (one more at every transition), `trials` (permits the holder got). Written at
  transitions only; a missing key is a closed fleet at generation 0.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

__all__ = [
    "SCRIPT",
    "SCRIPT_SHA",
    "STATES",
    "FleetMessage",
    "FleetReply",
    "channel_for",
    "keys_for",
    "parse_message",
    "parse_reply",
    "process_key_for",
    "script_args",
    "sequence_key_for",
]

STATES = ("closed", "open", "half_open")
_PREFIX = "fastapi_breaker"
# Past this many UTF-8 bytes a name is keyed by its SHA-256: a key stays short however long the
# name. Base64 forms start with "b" and digests with "h", so the two never collide.
_LONGEST_PLAIN = 150


def _encoded(text: str) -> str:
    # surrogatepass: a str may hold lone surrogates (from os.fsdecode, JSON); each still has
    # exactly one encoding, so two names never share a key.
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > _LONGEST_PLAIN:
        return "h" + hashlib.sha256(raw).hexdigest()
    # URL-safe base64 has no "{", "}" or ":"; without padding it is still one-to-one.
    return "b" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
    return _encoded(namespace)


def keys_for(namespace: str, name: str) -> tuple[str, str]:
    """(window key, state key) of one breaker of one app.

    Both share the Redis Cluster hash tag `{<namespace>:<name>}`, both encoded, so that the
    script's two keys live on one shard and different breakers spread over the shards.
    """
    if not isinstance(name, str):
        raise TypeError(f"a breaker name must be a string, got {name!r}")
    tag = f"{_PREFIX}:{{{_namespace(namespace)}:{_encoded(name)}}}"
    return f"{tag}:window", f"{tag}:state"


def sequence_key_for(namespace: str, name: str, process_id: str) -> str:
    """The key where the fleet keeps the last flush it took from one process for one breaker:
    a flush sent again (its answer was lost, not its effect) is then not counted twice."""
    window, _ = keys_for(namespace, name)
    return f"{window[: -len(':window')]}:seq:{_encoded(process_id)}"


def process_key_for(namespace: str, process_id: str) -> str:
    """The key one process keeps alive while it follows the fleet: when the process finds it
    gone, Redis lost its data (restarted empty, or flushed). Its hash tag `{<namespace>:process}`
    never equals a breaker's, whose names are encoded to start with "b" or "h"."""
    return f"{_PREFIX}:{{{_namespace(namespace)}:process}}:{_encoded(process_id)}"


def channel_for(namespace: str) -> str:
    """The pub/sub channel where one app's fleet transitions are published."""
    return f"{_PREFIX}:{_namespace(namespace)}:transitions"


def _count(field: str, value: object, most: int = 2**53 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(f"{field} must be an integer in 0..{most}, got {value!r}")
    return value


def script_args(
    *,
    process_id: str,
    successes: int,
    failures: int,
    rejections: int,
    want_trial: bool,
    trial_outcome: str,
    window_ms: int,
    buckets: int,
    threshold_pct: float,
    volume_threshold: int,
    reset_ms: int,
    lease_ms: int,
    max_trials: int,
    channel: str,
    name: str,
    sequence: int = 0,
) -> list[bytes | int | float]:
    """ARGV for `SCRIPT`, in its order, checked; text as UTF-8 bytes (lone surrogates kept)."""
    if not isinstance(process_id, str) or not process_id:
        raise ValueError(f"process_id must be a non-empty string, got {process_id!r}")
    if trial_outcome not in ("", "ok", "fail"):
        raise ValueError(f"trial_outcome must be '', 'ok' or 'fail', got {trial_outcome!r}")
    if not isinstance(threshold_pct, int | float) or not 0 <= threshold_pct <= 100:
        raise ValueError(f"threshold_pct must be a number in 0..100, got {threshold_pct!r}")
    _count("buckets", buckets, 1000)
    if buckets < 1 or _count("window_ms", window_ms) < buckets:
        raise ValueError(f"window_ms ({window_ms!r}) must be at least buckets ({buckets!r}) >= 1")
    if _count("lease_ms", lease_ms) < 1 or _count("max_trials", max_trials) < 1:
        raise ValueError(f"lease_ms and max_trials must be >= 1, got {lease_ms}, {max_trials}")
    return [
        process_id.encode("utf-8", "surrogatepass"),
        _count("successes", successes),
        _count("failures", failures),
        _count("rejections", rejections),
        1 if want_trial else 0,
        trial_outcome.encode("ascii"),
        window_ms,
        buckets,
        float(threshold_pct),
        _count("volume_threshold", volume_threshold),
        _count("reset_ms", reset_ms),
        lease_ms,
        max_trials,
        channel.encode("utf-8", "surrogatepass"),
        name.encode("utf-8", "surrogatepass"),
        _count("sequence", sequence),
    ]


# Lua 5.1 as Redis runs it. Numbers are doubles: every time and count stays below 2^53.
SCRIPT = r"""
local wkey, skey = KEYS[1], KEYS[2]
local pid, outcome, channel, name = ARGV[1], ARGV[6], ARGV[14], ARGV[15]
local add_s, add_f, add_r = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local want = ARGV[5] == '1'
local window_ms, nb = tonumber(ARGV[7]), tonumber(ARGV[8])
local threshold, volume = tonumber(ARGV[9]), tonumber(ARGV[10])
local reset_ms, lease_ms, max_trials = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])

-- A bucket: its epoch (server ms // bucket width), successes, failures, rejections.
local BUCKET = '<i8I4I4I4'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local repaired = 0

-- A stored number is trusted only as a non-negative integer below 2^53.
local function int(v)
  local n = tonumber(v)
  if n and n >= 0 and n < 9007199254740992 and n == math.floor(n) then return n end
  return nil
end

local function garbage(key)
  redis.call('DEL', key)
  repaired = 1
end

-- A flush is counted once: its sequence number (per process and breaker, 0 for a read) must be
-- past the last one taken, else it is a flush sent again whose first sending was counted.
local seq = int(ARGV[16]) or 0
if seq > 0 then
  local last = redis.pcall('GET', KEYS[3])
  if type(last) == 'table' then
    garbage(KEYS[3])
    last = false
  end
  if seq <= (int(last) or 0) then
    add_s, add_f, add_r, outcome = 0, 0, 0, ''
  else
    redis.call('SET', KEYS[3], seq, 'PX', 2 * window_ms)
  end
end

-- The window: sum the buckets still inside it, then add this call's counts. One string of `nb`
-- buckets of 20 bytes: read whole, one bucket overwritten in place. (A hash of named fields
-- cost eight times as much server time per call.)
local width = math.max(1, math.floor(window_ms / nb))
local epoch = math.floor(now / width)
local slot = epoch % nb
local s, f, cur_s, cur_f, cur_r = 0, 0, 0, 0, 0
local window = redis.pcall('GET', wkey)
-- Another type (an error reply) or another length (another bucket count) is garbage; inside a
-- string of the right length any bytes decode, and a bucket outside the window is ignored.
if type(window) == 'table' or (window and #window ~= 20 * nb) then
  garbage(wkey)
  window = false
end
if window then
  for i = 0, nb - 1 do
    local e, bs, bf, br = struct.unpack(BUCKET, window, 20 * i + 1)
    -- A bucket of another width or from a clock that went back is stale, not garbage.
    if e <= epoch and e > epoch - nb and e % nb == i then
      s, f = s + bs, f + bf
      if e == epoch then cur_s, cur_f, cur_r = bs, bf, br end
    end
  end
end
if add_s + add_f + add_r > 0 then
  if not window then redis.call('SET', wkey, string.rep('\0', 20 * nb)) end
  local most = 4294967295 -- a count saturates rather than wrap
  redis.call('SETRANGE', wkey, 20 * slot, struct.pack(BUCKET, epoch,
    math.min(cur_s + add_s, most), math.min(cur_f + add_f, most), math.min(cur_r + add_r, most)))
  redis.call('PEXPIRE', wkey, window_ms + width)
  s, f = s + add_s, f + add_f
end

-- The state machine. No key is a closed fleet at generation 0; a key of another type (an error
-- reply), a missing field or a bad value is garbage.
local st, opened_until, holder, lease_until, gen, trials = 'closed', 0, '', 0, 0, 0
local v = redis.pcall('HMGET', skey, 'state', 'opened_until', 'holder', 'lease_until',
  'generation', 'trials')
if v['err'] then
  garbage(skey)
elseif v[1] or v[2] or v[3] or v[4] or v[5] or v[6] then
  local ok_state = v[1] == 'closed' or v[1] == 'open' or v[1] == 'half_open'
  if ok_state and int(v[2]) and v[3] and int(v[4]) and int(v[5]) and int(v[6]) then
    st, opened_until, holder = v[1], int(v[2]), v[3]
    lease_until, gen, trials = int(v[4]), int(v[5]), int(v[6])
  else
    garbage(skey)
  end
end

local changed, granted = false, 0
local function move(to)
  st, gen, changed = to, gen + 1, true
  holder, lease_until, trials, opened_until = '', 0, 0, 0
end

if st == 'half_open' and holder == pid and outcome == 'ok' then
  move('closed')
  redis.call('DEL', wkey) -- a closed fleet starts counting afresh
  s, f = 0, 0
elseif st == 'half_open' and holder == pid and outcome == 'fail' then
  move('open')
  opened_until = now + reset_ms
end
local calls = s + f
if st == 'closed' and calls > 0 and calls >= volume and 100 * f > threshold * calls then
  move('open')
  opened_until = now + reset_ms
end
-- A trial when the reset is due, or when the last holder's lease ran out, never sooner.
if want and ((st == 'open' and now >= opened_until) or
             (st == 'half_open' and now >= lease_until)) then
  move('half_open')
  holder, lease_until, trials, granted = pid, now + lease_ms, max_trials, max_trials
end

if changed then
  redis.call('HSET', skey, 'state', st, 'opened_until', opened_until, 'holder', holder,
    'lease_until', lease_until, 'generation', gen, 'trials', trials)
  redis.call('PUBLISH', channel, st .. ':' .. gen .. ':' .. name)
end

local remaining = 0
if st == 'open' then remaining = math.max(0, opened_until - now) end
if st == 'half_open' then remaining = math.max(0, lease_until - now) end
local holds = 0
if st == 'half_open' and holder == pid then holds = 1 end
return {st, remaining, gen, granted, holds, repaired}
"""

# What `SCRIPT LOAD` answers for the script: EVALSHA needs no round trip to learn it.
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class FleetReply:
    """What one script call answered about one breaker's fleet state.

    - `state`: "closed", "open" or "half_open".
    - `remaining_ms`: open: until the reset is due; half_open: left on the trial's lease;
      closed: 0. Server time: the caller turns it into a local monotonic deadline.
    - `generation`: one more at every fleet transition (0 again after Redis lost its data).
    - `trials`: permits granted to this caller by this call (the lease's `max_trials`), else 0.
    - `holder`: this caller holds the trial's lease.
    - `repaired`: garbage was found in the breaker's keys and deleted.
    """

    state: str
    remaining_ms: int
    generation: int
    trials: int
    holder: bool
    repaired: bool


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value if isinstance(value, str) else None


def parse_reply(raw: object) -> FleetReply | None:
    """The script's reply, or None for anything else (never an exception)."""
    if not isinstance(raw, list | tuple) or len(raw) != 6:
        return None
    try:
        state = _text(raw[0])
    except UnicodeDecodeError:
        return None
    numbers = [n for n in raw[1:] if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
    if state not in STATES or len(numbers) != 5:
        return None
    remaining, generation, trials, holder, repaired = numbers
    if holder > 1 or repaired > 1:
        return None
    return FleetReply(state, remaining, generation, trials, holder == 1, repaired == 1)


@dataclasses.dataclass(frozen=True, slots=True)
class FleetMessage:
    """A transition as published: `<state>:<generation>:<name>`."""

    state: str
    generation: int
    name: str


def parse_message(data: object) -> FleetMessage | None:
    """A published transition, or None for anything else (never an exception)."""
    try:
        text = _text(data)
    except UnicodeDecodeError:
        return None
    if text is None or text.count(":") < 2:
        return None
    state, generation, name = text.split(":", 2)
    if state not in STATES or not generation.isascii() or not generation.isdigit():
        return None
    return FleetMessage(state, int(generation), name)
