-- Argo CD health of a ModelPool (semantic-router.io), from the router's status: Healthy when
-- Ready is True for the current generation (its message counts the ready endpoints), Degraded
-- when Ready is False (with its reason and message), Progressing until the router has seen it.
local hs = {status = "Progressing", message = "Waiting for the router to write status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the router to see generation " .. tostring(generation)
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message or ""
    elseif c.status == "False" then
      hs.status = "Degraded"
      hs.message = (c.reason or "") .. ": " .. (c.message or "")
    else
      hs.message = "Ready is " .. tostring(c.status)
    end
  end
end
return hs
