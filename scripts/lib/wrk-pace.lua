-- wrk script for `scripts/bench rest`: paces each connection so that wrk -t2 -c8 offers a fixed
-- rate instead of as many requests as the machine can take. After each response a connection
-- waits 1 ms with probability WRK_PACE_P (environment, default 0.4), else goes on at once (wrk's
-- timers have whole-millisecond resolution). At 0.4 eight connections offer about 14,000-15,000
-- requests a second here; the bench reports the rate reached.
local p = tonumber(os.getenv("WRK_PACE_P") or "0.4")

function delay()
    if math.random() < p then
        return 1
    end
    return 0
end
