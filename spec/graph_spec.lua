-- README: flowrun graph. `flowrun graph FLOW.lua [--mermaid]`: a
-- declarative flow as Graphviz DOT or a Mermaid flowchart.
local helper = require "spec.helper"

describe("flowrun graph", function()
  local fixtures = helper.root .. "/spec/fixtures"
  local known = fixtures .. "/graph_flow.lua"
  local ig = fixtures .. "/graph_integrations.lua"

  teardown(helper.cleanup)

  local function graph(args)
    local all = { "graph" }
    for _, a in ipairs(args) do all[#all + 1] = a end
    return helper.cli{ args = all }
  end

  -- Is `dot` (graphviz) there to render with? CI installs it: there its
  -- absence is an error, not a skip. The DOT text is checked without it.
  local function have_dot()
    if os.execute("command -v dot >/dev/null 2>&1") == true then return true end
    if os.getenv("CI") == "true" then error("dot (graphviz) is not installed, and CI must run this spec") end
    return false
  end

  -- Runs `dot -Tsvg` on text; returns ok, its stderr.
  local function render(text)
    local d = helper.tmpdir()
    helper.write(d .. "/in.dot", text)
    local ok = os.execute("dot -Tsvg " .. d .. "/in.dot -o " .. d .. "/out.svg 2>" .. d .. "/err")
    return ok == true and (helper.read(d .. "/out.svg") or ""):find("<svg", 1, true) ~= nil,
      helper.read(d .. "/err")
  end

  it("prints the DOT of a known flow", function()
    local r = graph({ "-I", ig, known })
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.code)
    assert.are.equal(helper.read(fixtures .. "/graph_flow.dot"), r.stdout)
  end)

  it("prints DOT that Graphviz renders without a complaint", function()
    if not have_dot() then pending("dot (graphviz) is not installed") return end
    local r = graph({ "-I", ig, known })
    local ok, err = render(r.stdout)
    assert.is_true(ok, err)
    assert.are.equal("", err)
  end)

  it("prints the Mermaid flowchart of a known flow with --mermaid", function()
    local r = graph({ "--mermaid", "-I", ig, known })
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.code)
    assert.are.equal(helper.read(fixtures .. "/graph_flow.mmd"), r.stdout)
  end)

  it("draws one node per step, the labels on edges, default labels dashed", function()
    local out = graph({ "-I", ig, known }).stdout
    for _, step in ipairs({ "ask_order", "check", "lookup", "retry", "show", "sorry", "oops", "bye" }) do
      assert.matches('\n  "' .. step .. '" %[', out)
    end
    assert.matches('"lookup" -> "show" [label="200, shipped"];', out, 1, true)
    assert.matches('"lookup" -> "retry" [label="timeout", style=dashed];', out, 1, true)
    assert.matches('"lookup" -> "sorry" [label="other, max-connection", style=dashed];', out, 1, true)
    -- the api step shows method and path (of its endpoint), the ask its text, cut
    assert.matches('label="lookup\\nGET /orders/{id}"', out, 1, true)
    assert.matches('label="ask_order\\nask \\"Your order number, please?…\\""', out, 1, true)
    -- a "flow:" target is a node of its own kind
    assert.matches('"flow:survey.lua" [shape=component', out, 1, true)
  end)

  it("draws an unknown target as a node of its own, and still renders", function()
    local f = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.say { text = "x", next = "shw" } },
}
]])
    local r = graph({ f })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('\n  "shw" [shape=box, style="dashed", color="#dc2626", fontcolor="#dc2626", label="shw\\n(unknown step)"];\n',
                   r.stdout, 1, true)
    assert.matches('\n  "(start)" -> "a";\n  "a" -> "shw";\n}\n', r.stdout, 1, true)
    if not have_dot() then pending("dot (graphviz) is not installed: the DOT is checked, not rendered") return end
    local ok, err = render(r.stdout)
    assert.is_true(ok, err)
  end)

  it("draws steps named (start) and (end) apart from the start and the end", function()
    local f = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "(start)",
  steps = {
    ["(start)"] = flow.say { text = "hi", next = "(end)" },
    ["(end)"] = flow.say { text = "bye" },
  },
}
]])
    local r = graph({ f })
    assert.are.equal(0, r.code, r.stderr)
    local out = r.stdout
    assert.matches('\n  "(start)_2" [shape=circle', out, 1, true)
    assert.matches('\n  "(start)" [shape=box, style="rounded,filled", fillcolor="#dcfce7", label="(start)\\nsay', out, 1, true)
    assert.matches('\n  "(end)" [shape=box, style="rounded,filled", fillcolor="#dcfce7", label="(end)\\nsay', out, 1, true)
    assert.matches('\n  "(end)_2" [shape=doublecircle', out, 1, true)
    assert.matches('\n  "(start)_2" -> "(start)";\n  "(start)" -> "(end)";\n  "(end)" -> "(end)_2";\n}', out, 1, true)
    r = graph({ "--mermaid", f })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('\n  flow_start(("start"))\n  s__start_("(start)<br/>say #quot;hi#quot;")\n'
      .. '  s__end_("(end)<br/>say #quot;bye#quot;")\n  flow_end((("end")))\n'
      .. "  flow_start --> s__start_\n  s__start_ --> s__end_\n  s__end_ --> flow_end\n", r.stdout, 1, true)
    if not have_dot() then pending("dot (graphviz) is not installed: the DOT is checked, not rendered") return end
    local ok, err = render(out)
    assert.is_true(ok, err)
  end)

  it("renders the demo flow as docs/demo-flow.svg, the picture of README.md", function()
    local r = helper.cli{ args = { "graph", "scripts/demo/order_status.lua" }, cwd = helper.root }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('digraph "order_status"', r.stdout, 1, true)
    assert.matches('"lookup" -> "slow" [label="timeout", style=dashed];', r.stdout, 1, true)
    if not have_dot() then pending("dot (graphviz) is not installed") return end
    local d = helper.tmpdir()
    helper.write(d .. "/demo.dot", r.stdout)
    assert.is_true(os.execute("dot -Tsvg <" .. d .. "/demo.dot >" .. d .. "/demo.svg"))
    -- regenerate with: build/flowrun graph scripts/demo/order_status.lua | dot -Tsvg -o docs/demo-flow.svg
    assert.are.equal(helper.read(helper.root .. "/docs/demo-flow.svg"), helper.read(d .. "/demo.svg"))
  end)

  describe("exit status", function()
    it("is 2 for a script that does not define a flow", function()
      local f = helper.flow('say("hi")\n')
      local r = graph({ f })
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(f .. " does not define a flow", r.stderr, 1, true)
    end)

    it("is 2 for a file that cannot be read, or a syntax error", function()
      local r = graph({ "/nonexistent/flow.lua" })
      assert.are.equal(2, r.code)
      assert.matches("cannot read /nonexistent/flow.lua", r.stderr, 1, true)
      local f = helper.flow("return flow.define {\n")
      r = graph({ f })
      assert.are.equal(2, r.code)
      assert.matches(f .. ":2:", r.stderr, 1, true)
    end)

    it("is 2 without a file or with an unknown option", function()
      assert.are.equal(2, graph({}).code)
      assert.are.equal(2, graph({ "--svg", known }).code)
    end)
  end)
end)
