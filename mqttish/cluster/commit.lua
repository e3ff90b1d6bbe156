-- One commit of one node of an mqttish cluster, atomically (mqttish/cluster/store.py).
--
-- ARGV: prefix, member, fence ("1": refuse if the member's lease has expired), then
-- operations, each a code and its arguments. Store records follow the rules of every
-- mqttish store (mqttish/persistence/__init__.py), with one more: only the member that
-- owns a client id writes its session. The other operations are the cluster's:
-- client id ownership, wills of connected clients, forwarded batches, inbox
-- acknowledgements, route table entries and broadcasts.
-- Returns the answers to claims: client id, previous owner ('' if none or this member).

local P, me, fence = ARGV[1], ARGV[2], ARGV[3]
if fence == '1' and redis.call('EXISTS', P .. ':lease:' .. me) == 0 then
  return redis.error_reply('FENCED the lease of ' .. me .. ' has expired')
end

local released = {}
local owners = {}
local sessions = {}
local results = {}

local function owner_of(cid)
  local owner = owners[cid]
  if owner == nil then
    owner = redis.call('HGET', P .. ':owner', cid)
    owners[cid] = owner
  end
  return owner
end

local function set_owner(cid, member)
  local previous = owner_of(cid)
  if previous then
    redis.call('SREM', P .. ':owned:' .. previous, cid)
  end
  if member then
    redis.call('HSET', P .. ':owner', cid, member)
    redis.call('SADD', P .. ':owned:' .. member, cid)
  else
    redis.call('HDEL', P .. ':owner', cid)
  end
  owners[cid] = member
end

local function mine(cid)  -- the session exists and this member owns it
  if owner_of(cid) ~= me then
    return false
  end
  local exists = sessions[cid]
  if exists == nil then
    exists = redis.call('EXISTS', P .. ':s:' .. cid) == 1
    sessions[cid] = exists
  end
  return exists
end

local function refer(id)
  redis.call('HINCRBY', P .. ':ref', id, 1)
end

local function release(id)
  redis.call('HINCRBY', P .. ':ref', id, -1)
  released[id] = true
end

-- A delivery is "message id:packet id:state:rest" (rest: binary, from the node).
local function split_delivery(value)
  local a = string.find(value, ':', 1, true)
  local b = string.find(value, ':', a + 1, true)
  local c = string.find(value, ':', b + 1, true)
  return string.sub(value, 1, a - 1), string.sub(value, b + 1, c - 1), string.sub(value, c + 1)
end

local function delete_session(cid)
  for _, value in ipairs(redis.call('HVALS', P .. ':dq:' .. cid)) do
    release((split_delivery(value)))
  end
  redis.call('DEL', P .. ':s:' .. cid, P .. ':sub:' .. cid, P .. ':dq:' .. cid, P .. ':in:' .. cid)
  sessions[cid] = false
end

local function forget_unreferenced()
  for id in pairs(released) do
    if tonumber(redis.call('HGET', P .. ':ref', id) or '0') <= 0 then
      redis.call('HDEL', P .. ':ref', id)
      redis.call('HDEL', P .. ':msg', id)
      redis.call('ZREM', P .. ':msgexp', id)
    end
  end
end

local function housekeeping(now, grace)
  for _, cid in ipairs(redis.call('SMEMBERS', P .. ':owned:' .. me)) do
    local fields = redis.call('HMGET', P .. ':s:' .. cid, 'c', 'x')
    if fields[1] == '0' and fields[2] and fields[2] ~= '' and tonumber(fields[2]) < now - grace then
      delete_session(cid)
      set_owner(cid, false)
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', P .. ':msgexp', '-inf', now)
  if #expired == 0 then
    return
  end
  local gone = {}
  for _, id in ipairs(expired) do
    gone[id] = true
  end
  local retained = redis.call('HGETALL', P .. ':retained')
  for k = 1, #retained, 2 do
    if gone[retained[k + 1]] then
      redis.call('HDEL', P .. ':retained', retained[k])
      release(retained[k + 1])
    end
  end
  for _, cid in ipairs(redis.call('SMEMBERS', P .. ':owned:' .. me)) do
    local queue = redis.call('HGETALL', P .. ':dq:' .. cid)
    for k = 1, #queue, 2 do
      local id, state = split_delivery(queue[k + 1])
      if gone[id] and state == '0' then
        redis.call('HDEL', P .. ':dq:' .. cid, queue[k])
        release(id)
      end
    end
  end
end

local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'SS' then  -- session saved: client id, expiry interval, connected, lifetime, expires at
    local cid = ARGV[i + 1]
    if not owner_of(cid) then
      set_owner(cid, me)
    end
    if owner_of(cid) == me then
      redis.call('HSET', P .. ':s:' .. cid, 'e', ARGV[i + 2], 'c', ARGV[i + 3], 'l', ARGV[i + 4],
                 'x', ARGV[i + 5])
      sessions[cid] = true
    end
    i = i + 6
  elseif op == 'SD' then  -- session deleted
    if mine(ARGV[i + 1]) then
      delete_session(ARGV[i + 1])
    end
    i = i + 2
  elseif op == 'BS' then  -- subscription saved: client id, filter, options
    if mine(ARGV[i + 1]) then
      redis.call('HSET', P .. ':sub:' .. ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'BD' then  -- subscription deleted
    if mine(ARGV[i + 1]) then
      redis.call('HDEL', P .. ':sub:' .. ARGV[i + 1], ARGV[i + 2])
    end
    i = i + 3
  elseif op == 'MS' then  -- message saved: id, encoded, expires at ('' never)
    local id = ARGV[i + 1]
    if redis.call('HSETNX', P .. ':msg', id, ARGV[i + 2]) == 1 then
      if ARGV[i + 3] ~= '' then
        redis.call('ZADD', P .. ':msgexp', ARGV[i + 3], id)
      end
      released[id] = true
    end
    if tonumber(id) + 1 > tonumber(redis.call('GET', P .. ':nextmsg') or '1') then
      redis.call('SET', P .. ':nextmsg', tonumber(id) + 1)
    end
    i = i + 4
  elseif op == 'DS' then  -- delivery saved: client id, sequence, message id, value
    local cid, id = ARGV[i + 1], ARGV[i + 3]
    if mine(cid) and redis.call('HEXISTS', P .. ':msg', id) == 1 then
      local previous = redis.call('HGET', P .. ':dq:' .. cid, ARGV[i + 2])
      redis.call('HSET', P .. ':dq:' .. cid, ARGV[i + 2], ARGV[i + 4])
      refer(id)
      if previous then
        release((split_delivery(previous)))
      end
    end
    i = i + 5
  elseif op == 'DU' then  -- delivery updated: client id, sequence, packet id, state
    local cid = ARGV[i + 1]
    if mine(cid) then
      local value = redis.call('HGET', P .. ':dq:' .. cid, ARGV[i + 2])
      if value then
        local id, _, rest = split_delivery(value)
        redis.call('HSET', P .. ':dq:' .. cid, ARGV[i + 2],
                   id .. ':' .. ARGV[i + 3] .. ':' .. ARGV[i + 4] .. ':' .. rest)
      end
    end
    i = i + 5
  elseif op == 'DD' then  -- delivery deleted: client id, sequence
    local cid = ARGV[i + 1]
    if mine(cid) then
      local value = redis.call('HGET', P .. ':dq:' .. cid, ARGV[i + 2])
      if value then
        redis.call('HDEL', P .. ':dq:' .. cid, ARGV[i + 2])
        release((split_delivery(value)))
      end
    end
    i = i + 3
  elseif op == 'IH' then  -- incoming QoS 2 id held
    if mine(ARGV[i + 1]) then
      redis.call('SADD', P .. ':in:' .. ARGV[i + 1], ARGV[i + 2])
    end
    i = i + 3
  elseif op == 'IR' then  -- incoming QoS 2 id released
    if mine(ARGV[i + 1]) then
      redis.call('SREM', P .. ':in:' .. ARGV[i + 1], ARGV[i + 2])
    end
    i = i + 3
  elseif op == 'RS' then  -- retained saved: topic, message id
    local id = ARGV[i + 2]
    if redis.call('HEXISTS', P .. ':msg', id) == 1 then
      local previous = redis.call('HGET', P .. ':retained', ARGV[i + 1])
      redis.call('HSET', P .. ':retained', ARGV[i + 1], id)
      refer(id)
      if previous then
        release(previous)
      end
    end
    i = i + 3
  elseif op == 'RD' then  -- retained deleted: topic
    local previous = redis.call('HGET', P .. ':retained', ARGV[i + 1])
    if previous then
      redis.call('HDEL', P .. ':retained', ARGV[i + 1])
      release(previous)
    end
    i = i + 2
  elseif op == 'WS' then  -- will saved: client id, encoded, due at
    if mine(ARGV[i + 1]) then
      redis.call('HSET', P .. ':s:' .. ARGV[i + 1], 'w', ARGV[i + 2], 'wa', ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'WD' then  -- will deleted
    if mine(ARGV[i + 1]) then
      redis.call('HDEL', P .. ':s:' .. ARGV[i + 1], 'w', 'wa')
    end
    i = i + 2
  elseif op == 'CL' then  -- claim a client id: answered with its previous owner
    local cid = ARGV[i + 1]
    local owner = owner_of(cid)
    if not owner or owner == me then
      if not owner then
        set_owner(cid, me)
      end
      results[#results + 1] = cid
      results[#results + 1] = ''
    else
      results[#results + 1] = cid
      results[#results + 1] = owner
    end
    i = i + 2
  elseif op == 'OW' then  -- owner set: client id, member ('' none): adopting a dead member's
    set_owner(ARGV[i + 1], ARGV[i + 2] ~= '' and ARGV[i + 2])
    i = i + 3
  elseif op == 'UC' then  -- unclaim: the session ended here
    if owner_of(ARGV[i + 1]) == me then
      set_owner(ARGV[i + 1], false)
    end
    i = i + 2
  elseif op == 'HO' then  -- hand over: client id, to member, message for it
    local owner = owner_of(ARGV[i + 1])
    if not owner or owner == me then
      set_owner(ARGV[i + 1], ARGV[i + 2])
      redis.call('PUBLISH', P .. ':ctl:' .. ARGV[i + 2], ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'LW' then  -- the will of a client connected here
    redis.call('HSET', P .. ':wills:' .. me, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'LD' then
    redis.call('HDEL', P .. ':wills:' .. me, ARGV[i + 1])
    i = i + 2
  elseif op == 'FW' then  -- forward a batch: to member, batch
    local to = ARGV[i + 1]
    local adopter = redis.call('GET', P .. ':adopted:' .. to)
    if adopter then  -- it died: its adopter delivers to the sessions it left
      redis.call('XADD', P .. ':inbox:' .. adopter, '*', 'f', me, 'x', to, 'd', ARGV[i + 2])
    elseif redis.call('HEXISTS', P .. ':members', to) == 1 then
      redis.call('XADD', P .. ':inbox:' .. to, '*', 'f', me, 'd', ARGV[i + 2])
    end
    i = i + 3
  elseif op == 'AK' then  -- an inbox entry was delivered: member, entry id
    redis.call('XDEL', P .. ':inbox:' .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'RA' then  -- route added: filter
    redis.call('HSET', P .. ':routes:' .. me, ARGV[i + 1], '1')
    i = i + 2
  elseif op == 'RR' then  -- route removed
    redis.call('HDEL', P .. ':routes:' .. me, ARGV[i + 1])
    i = i + 2
  elseif op == 'PB' then  -- broadcast: sequence, message
    redis.call('HSET', P .. ':routes:' .. me, '#seq', ARGV[i + 1])
    redis.call('PUBLISH', P .. ':ctl', ARGV[i + 2])
    i = i + 3
  elseif op == 'AD' then  -- a dead member's leftovers, once adopted
    local dead = ARGV[i + 1]
    redis.call('DEL', P .. ':inbox:' .. dead, P .. ':routes:' .. dead, P .. ':wills:' .. dead,
               P .. ':owned:' .. dead, P .. ':lease:' .. dead)
    redis.call('HDEL', P .. ':members', dead)
    i = i + 2
  elseif op == 'PX' then  -- publish: channel suffix, message
    redis.call('PUBLISH', P .. ':' .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'HK' then  -- housekeeping: now, grace
    housekeeping(tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
    i = i + 3
  else
    return redis.error_reply('unknown operation ' .. tostring(op))
  end
end
forget_unreferenced()
return results
