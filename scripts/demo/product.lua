-- The REPL tour's flow (`make repl`, then `.run`): the person asks for
-- products by number until they leave with an empty line or Ctrl-D.
local id = ask("Which product?")
while id and id ~= "" do
  local label, res = api_node{ integration = "demo", path = "/v1/product/{id}",
                               params = { id = id }, results = { "200", "404" } }
  if label == "200" then
    say(("%s: %s EUR"):format(res.json.name, res.json.price))
  elseif label == "404" then
    say("There is no product " .. id)
  else
    say("The catalogue does not answer (" .. label .. ")")
  end
  id = ask("Anything else?")
end
say("Bye")
