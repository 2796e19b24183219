-- wrk script for bench/load_serve.sh: POSTs the JSON body in $LOAD_BODY_FILE
-- to /api/search and counts non-200 answers (wrk counts only socket errors
-- and non-2xx/3xx itself).
local f = assert(io.open(os.getenv("LOAD_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.path = "/api/search"
wrk.body = f:read("*a")
wrk.headers["Content-Type"] = "application/json"
f:close()
