-- Argo CD health of a SemanticRoute (semantic-router.io), from the router's status: Healthy
-- when Ready is True for the current generation, Degraded when Ready is False (each condition
-- that is not as it should be, with its reason and message: Accepted or ResolvedRefs False,
-- Degraded True), Progressing until the router has seen the current generation.
local hs = {status = "Progressing", message = "Waiting for the router to write status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the router to see generation " .. tostring(generation)
  return hs
end
local ready, problems = nil, {}
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif (c.type == "Degraded" and c.status == "True") or (c.type ~= "Degraded" and c.status == "False") then
    table.insert(problems, c.type .. " " .. (c.reason or "") .. ": " .. (c.message or ""))
  end
end
if ready == nil then
  return hs
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
elseif ready.status == "False" then
  hs.status = "Degraded"
  if #problems > 0 then
    hs.message = table.concat(problems, "; ")
  else
    hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
  end
else
  hs.message = "Ready is " .. tostring(ready.status) .. " (" .. (ready.reason or "") .. ")"
end
return hs
