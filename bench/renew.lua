-- wrk script: PUT heartbeats to registered instances, cycling through the ids file.
-- With FERRY_BENCH_PATH set, every request goes to that one path instead (nginx's empty 200).
local paths = {}
local fixed = os.getenv("FERRY_BENCH_PATH")
if not fixed then
  for line in io.lines(os.getenv("FERRY_BENCH_IDS")) do paths[#paths + 1] = line end
end
local n = 0
request = function()
  n = n + 1
  local path = fixed or paths[(n % #paths) + 1]
  return wrk.format("PUT", path, { ["Accept"] = "application/json" })
end
