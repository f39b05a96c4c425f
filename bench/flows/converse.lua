-- The serve and takeover rows' conversation: two questions, a summary of
-- both answers (bench/run.lua; scripts/converse.py drives it over HTTP).
local name = ...
local colour = ask("colour?")
local number = ask("number?")
say(tostring(name) .. " likes " .. tostring(colour) .. " " .. tostring(number))
