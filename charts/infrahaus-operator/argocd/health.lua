-- Argo CD health check for infrahaus.io/Container.
--   Healthy:     the Ready condition is True for the current generation; a
--                change waiting for a restart (RestartRequired True) and a
--                template change waiting for the retry annotation
--                (TemplateOutOfSync True) are named in the message.
--   Degraded:    phase Error (final for this generation and retry value; see
--                status.message), also a guest destroyed (GuestMissing) or
--                taken over (OwnershipLost) outside the operator.
--   Progressing: everything else: a Container being deleted, a spec change or a
--                retry annotation the controller has not acted on yet.
local health = {}

local function current(generation, observed)
  return generation == nil or observed == nil or observed == generation
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  health.status = "Progressing"
  health.message = "Deleting: the controller is removing the guest"
  return health
end

local status = obj.status
if status == nil then
  health.status = "Progressing"
  health.message = "Waiting for the controller"
  return health
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if not current(generation, status.observedGeneration) then
  health.status = "Progressing"
  health.message = "Waiting for the controller to act on generation " .. tostring(generation)
  return health
end

local retry = nil
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  retry = obj.metadata.annotations["infrahaus.io/retry"]
end
if retry ~= nil and retry ~= status.lastAppliedRetry then
  health.status = "Progressing"
  health.message = "Waiting for the controller to act on retry " .. tostring(retry)
  return health
end

if status.phase == "Error" then
  health.status = "Degraded"
  health.message = status.message or "Container failed"
  return health
end

if status.conditions ~= nil then
  local waiting = {}
  for _, condition in ipairs(status.conditions) do
    if condition.type == "RestartRequired" and condition.status == "True" then
      table.insert(waiting, "restart required: " .. (condition.message or ""))
    end
    if condition.type == "TemplateOutOfSync" and condition.status == "True" then
      table.insert(waiting, "template out of sync: " .. (condition.message or ""))
    end
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" and condition.status == "True" and current(generation, condition.observedGeneration) then
      health.status = "Healthy"
      health.message = status.message or condition.message or "Container ready"
      for _, note in ipairs(waiting) do
        health.message = health.message .. "; " .. note
      end
      return health
    end
  end
end

health.status = "Progressing"
if status.phase ~= nil and status.progress ~= nil then
  health.message = status.phase .. " (" .. tostring(status.progress) .. "%)"
  if status.message ~= nil then
    health.message = health.message .. ": " .. status.message
  end
else
  health.message = status.message or status.phase or "Waiting for the controller"
end
return health
