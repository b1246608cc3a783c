-- Argo CD health of a SemanticRoute (semantic-router.io), from the router's status:
-- Healthy when Accepted and ResolvedRefs are True for the current generation, Degraded when
-- either is False (with its reason and message), Progressing until the router has seen it.
local hs = {status = "Progressing", message = "Waiting for the router to write status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the router to see generation " .. tostring(generation)
  return hs
end
local wanted = {Accepted = true, ResolvedRefs = true}
local found, failed, pending = 0, {}, {}
local accepted = ""
for _, c in ipairs(obj.status.conditions) do
  if wanted[c.type] then
    found = found + 1
    if c.status == "False" then
      table.insert(failed, c.type .. " " .. (c.reason or "") .. ": " .. (c.message or ""))
    elseif c.status ~= "True" then
      table.insert(pending, c.type .. " is " .. tostring(c.status))
    elseif c.type == "Accepted" then
      accepted = c.message or ""
    end
  end
end
if #failed > 0 then
  hs.status = "Degraded"
  hs.message = table.concat(failed, "; ")
elseif #pending > 0 or found < 2 then
  if #pending > 0 then hs.message = table.concat(pending, "; ") end
else
  hs.status = "Healthy"
  hs.message = accepted
end
return hs
