-- Times flowrun's `json` against lua-cjson (`cjson`, without the integer
-- pass the old `json` added) on a typical 1 KB API object: encode+decode,
-- encode alone, decode alone. Usage: lua5.4 bench/json.lua [N] (100000)
-- after `make all`.
package.cpath = "build/?.so;" .. package.cpath
local flowrun = require "flowrun"
local _ = flowrun.new{}                 -- preloads json and cjson
local N = tonumber(arg[1]) or 100000

local function object(json)
  return {
    id = 123456789, name = "Widget deluxe edition", price = 19.99, currency = "EUR",
    in_stock = true, discontinued = false, rating = 4.25, reviews = 1287,
    tags = { "tools", "garden", "outdoor", "sale", "new" },
    dimensions = { width = 12.5, height = 30, depth = 7.25, unit = "cm" },
    seller = { id = 998877, name = "ACME Corp", email = "sales@acme.example", verified = true,
               address = { street = "1 Main Street", city = "Springfield", zip = "12345", country = "US" } },
    variants = {
      { sku = "W-RED-S", color = "red", size = "S", stock = 12, price = 19.99 },
      { sku = "W-RED-M", color = "red", size = "M", stock = 0, price = 19.99 },
      { sku = "W-BLU-L", color = "blue", size = "L", stock = 5, price = 21.5 },
    },
    description = "A sturdy widget for all your garden needs. Comes with a two-year warranty and free shipping.",
    created_at = "2024-03-01T12:00:00Z", updated_at = "2024-06-15T08:30:00Z", note = json.null,
    history = { 101, 102, 103, 104, 105, 106, 107, 108, 109, 110 },
    scores = { 0.5, 0.25, 0.125, 3.75, 99.5, 1.1 },
    short_note = "Free returns within 30 days.",
  }
end

for _, name in ipairs({ "json", "cjson" }) do
  local json = require(name)
  local obj = object(json)
  local text = json.encode(obj)
  local t0 = os.clock()
  for _ = 1, N do json.decode(json.encode(obj)) end
  local t1 = os.clock()
  for _ = 1, N do json.encode(obj) end
  local t2 = os.clock()
  for _ = 1, N do json.decode(text) end
  local t3 = os.clock()
  print(("%-5s %d bytes: encode+decode %.2f us, encode %.2f us, decode %.2f us"):format(
    name, #text, (t1 - t0) / N * 1e6, (t2 - t1) / N * 1e6, (t3 - t2) / N * 1e6))
end
