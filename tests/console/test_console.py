"""The console in a real browser (Debian's chromium, driven by Playwright) against a real
stack: broker, sink, chdb, the API with the console, and a real agent waiting on a
two-approver refund.

- the approval flow: approver A signs in, sees the request, approves, the page shows
  "1 of 2"; the agent's own key is refused; approver B approves; the agent proceeds;
- tenant isolation: globex's approver sees nothing of acme, and acme's run URL is a 404;
- CSRF: a POST without the session's token is a 403; the cookie's flags; the key is
  never shown back; a bad parameter is a 400 page; sign-out ends the session on the
  server (its old cookie no longer works);
- the run page: a finished run verifies ok, a run tampered with in the store is broken;
  the replay bundle downloads;
- every page in :data:`tests.console.pages.PAGES`: no serious or critical axe-core
  violation, a screenshot with content, and no request leaving the machine.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
from PIL import Image

from tests.console.pages import PAGES
from tests.console.stack import ConsoleStack, pending_for
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

STATE: dict[str, Any] = {}
"""What the tests of this module hand on: the approved run (the flow runs first)."""


def context(browser: Any, stack: ConsoleStack, seen: list[str] | None = None) -> Any:
    """A fresh browser context (its own cookies); CSP bypassed only so the test can
    inject axe-core; every request's URL lands in ``seen``."""
    made = browser.new_context(base_url=stack.url, bypass_csp=True,
                               viewport={"width": 1280, "height": 900})
    if seen is not None:
        made.on("request", lambda r: seen.append(r.url))
    return made


def sign_in(ctx: Any, stack: ConsoleStack, who: str) -> Any:
    page = ctx.new_page()
    page.goto("/console/signin")
    page.fill("#key", stack.keys[who])
    page.click("main button[type=submit]")
    page.wait_for_url("**/console/inbox")
    return page


def request_card(page: Any, approval_id: str) -> Any:
    return page.locator(f'section.request[data-approval="{approval_id}"]')


def vote(page: Any, approval_id: str, decision: str, reason: str) -> None:
    card = request_card(page, approval_id)
    form = card.locator(f'form[action$="/{decision}"]')
    form.locator("input[name=reason]").fill(reason)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


def test_two_approvers_in_the_browser_release_a_waiting_agent(browser: Any,
                                                              stack: ConsoleStack) -> None:
    agent = stack.refund(450)
    request = wait_for(lambda: pending_for(stack, agent.run_id or ""), 60, interval_s=0.3,
                       what="the refund's approval request in the store")
    approval_id = request["approval_id"]

    ana = sign_in(context(browser, stack), stack, "ana")
    card = request_card(ana, approval_id)
    assert card.count() == 1, ana.content()[:3000]
    text = card.inner_text()
    assert "stripe:create_refund" in text and "refund-agent" in text and "450" in text
    assert "refund-over-threshold" in text and "two finance approvers" in text
    assert "0 of 2" in text and ("due in" in text or "SLA" in text)
    assert card.locator(f'a[href="/console/runs/{agent.run_id}"]').count() == 1

    vote(ana, approval_id, "approve", "customer is eligible")
    assert "Approved" in ana.locator(".flash").inner_text()
    after = request_card(ana, approval_id).inner_text()
    assert "1 of 2" in after and "ana@finance" in after
    assert not agent.proceeded.is_set(), "one approval of two released the agent"

    bot = sign_in(context(browser, stack), stack, "bot")
    vote(bot, approval_id, "approve", "my own agent")
    assert "acts for agent" in bot.locator(".flash").inner_text()

    ben = sign_in(context(browser, stack), stack, "ben")
    assert "1 of 2" in request_card(ben, approval_id).inner_text()
    vote(ben, approval_id, "approve", "second pair of eyes")
    assert agent.proceeded.wait(30), "the agent did not proceed after the second approval"
    agent.join(60)
    assert agent.error is None and agent.outcome == "success", agent.error
    assert request_card(ben, approval_id).count() == 0

    stack.landed(agent.run_id or "", 7)
    ben.goto("/console/inbox")
    row = ben.locator(f'tr[data-approval="{approval_id}"]')
    wait_for(lambda: (ben.reload(), row.count())[1], 30, interval_s=0.5,
             what="the approved request in the history")
    assert "approved" in row.inner_text() and "ana@finance, ben@finance" in row.inner_text()
    STATE["run"] = agent.run_id
    STATE["approval"] = approval_id


def _finished_run(stack: ConsoleStack) -> str:
    if "run" not in STATE:  # this module's flow did not run first: make a finished run
        agent = stack.refund(50)
        agent.join(60)
        stack.landed(agent.run_id or "", 4)
        STATE["run"] = agent.run_id
    return str(STATE["run"])


def test_another_tenant_sees_nothing_and_a_foreign_run_is_a_404(browser: Any,
                                                                stack: ConsoleStack) -> None:
    run_id = _finished_run(stack)
    globex = sign_in(context(browser, stack), stack, "globex")
    assert globex.locator("section.request").count() == 0
    assert globex.locator("tr[data-approval]").count() == 0
    for path in ("/console/inbox", "/console/runs", "/console/search?since=7d"):
        globex.goto(path)
        assert run_id not in globex.content() and "acme" not in globex.content(), path
    for path in (f"/console/runs/{run_id}", f"/console/runs/{run_id}/replay.json"):
        answer = globex.goto(path) if path.endswith(run_id) else \
            globex.context.request.get(path)
        assert answer.status == 404, path
    assert "Not found" in globex.content() and run_id not in globex.locator("main").inner_text()


def test_a_post_without_the_csrf_token_is_refused(browser: Any, stack: ConsoleStack) -> None:
    ctx = context(browser, stack)
    page = sign_in(ctx, stack, "ana")
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "agentledger_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert cookie["path"] == "/console"
    assert stack.keys["ana"] not in page.content()
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token and token not in cookie["value"]
    target = "/console/inbox/0193a000-0000-7000-8000-000000000000/approve"
    for form in ({"reason": "no token"}, {"reason": "wrong", "csrf": "x" * 43}):
        refused = ctx.request.post(target, form=form)
        assert refused.status == 403 and "CSRF" in refused.text(), refused.text()[:500]
    assert ctx.request.post("/console/signout", form={}).status == 403
    anonymous = browser.new_context(base_url=stack.url)
    assert anonymous.request.post("/console/signin",
                                  form={"key": stack.keys["ana"]}).status == 403
    anonymous.close()
    with_token = ctx.request.post(target, form={"reason": "a real form", "csrf": token},
                                  max_redirects=0)
    assert with_token.status == 404, "with its token the POST gets past CSRF (to a 404)"

    bad = page.goto("/console/search?since=the-day-before")
    assert bad is not None and bad.status == 400
    assert "since" in page.locator("main").inner_text()
    assert "Traceback" not in page.content()

    page.goto("/console/inbox")
    page.locator("form.signout button").click()
    page.wait_for_url("**/console/signin")
    assert not [c for c in ctx.cookies() if c["name"] == "agentledger_console"
                and c["value"] == cookie["value"]], "sign-out keeps the session cookie"
    again = page.goto("/console/inbox")
    assert again is not None and again.url.split("?")[0].endswith("/console/signin")
    replayed = browser.new_context(base_url=stack.url)
    replayed.add_cookies([{**cookie}])
    stale = replayed.new_page()
    stale.goto("/console/inbox")
    assert "/console/signin" in stale.url, "a signed-out session id still works"
    replayed.close()


def test_the_run_page_shows_verify_ok_then_broken_after_tampering(
        browser: Any, stack: ConsoleStack) -> None:
    run_id = _finished_run(stack)
    page = sign_in(context(browser, stack), stack, "ana")
    page.goto(f"/console/runs/{run_id}")
    assert page.locator("[data-verify]").get_attribute("data-verify") == "ok"
    phases = page.locator("tr[data-phase]").evaluate_all(
        "rows => rows.map(r => r.dataset.phase)")
    approved = ("approval",) if "approval" in STATE else ()  # the flow's run asked for one
    for phase in ("input", "policy", *approved, "tool", "outcome"):
        assert phase in phases, phases
    bundle = page.context.request.get(f"/console/runs/{run_id}/replay.json")
    assert bundle.status == 200 and "attachment" in bundle.headers["content-disposition"]
    assert run_id in bundle.text()
    page.click("text=events of this trace")
    assert page.locator(f'table.results a[href="/console/runs/{run_id}"]').count() >= 4, \
        "the trace's search lists the run's events"
    page.goto(f"/console/search?run_id={run_id}&since=1h&limit=3&order=x")
    first = page.locator("table.results tbody tr").all_inner_texts()
    assert len(first) == 3
    page.click("a[rel=next]")
    assert "cursor=" in page.url and "limit=3" in page.url and f"run_id={run_id}" in page.url
    second = page.locator("table.results tbody tr").all_inner_texts()
    assert second and not set(first) & set(second), "the next page repeats the first"
    page.goto(f"/console/runs/{run_id}")
    trace = page.locator("dl.facts dd code").first.inner_text()
    page.goto(f"/console/runs/{trace}")
    assert run_id in page.content(), "a run's page opens by its trace id too"

    victim = stack.refund(50)
    victim.join(60)
    assert victim.outcome == "success", victim.error
    stack.landed(victim.run_id or "", 4)
    page.goto(f"/console/runs/{victim.run_id}")
    assert page.locator("[data-verify]").get_attribute("data-verify") == "ok"
    ((event_id, raw),) = stack.query(
        "SELECT event_id, raw FROM events FINAL WHERE run_id = {r:String} AND seq = 2",
        r=victim.run_id)
    forged = {**orjson.loads(raw), "principal": "mallory"}
    stack.sink.client.command(
        "ALTER TABLE events UPDATE raw = {raw:String} WHERE event_id = {id:UUID}",
        parameters={"raw": orjson.dumps(forged).decode(), "id": str(event_id)},
        settings={"mutations_sync": 2})
    page.goto(f"/console/runs/{victim.run_id}")
    assert page.locator("[data-verify]").get_attribute("data-verify") == "broken"
    assert "broken at seq 2" in page.locator("main").inner_text()


def _blank(png: bytes) -> bool:
    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    return max(histogram) > 0.995 * sum(histogram)


@pytest.mark.parametrize(("name", "path", "who"), PAGES, ids=[p[0] for p in PAGES])
def test_every_page_is_accessible_has_content_and_stays_local(
        browser: Any, stack: ConsoleStack, axe_script: Any, name: str, path: str,
        who: str) -> None:
    seen: list[str] = []
    ctx = context(browser, stack, seen)
    page = sign_in(ctx, stack, who) if who else ctx.new_page()
    answer = page.goto(path.format(run=_finished_run(stack)))
    assert answer is not None and answer.status in (200, 404), (path, answer and answer.status)
    assert "Traceback" not in page.content()
    page.add_script_tag(path=str(axe_script))
    found = page.evaluate("async () => (await axe.run(document)).violations.map("
                          "v => ({id: v.id, impact: v.impact, help: v.help, "
                          "nodes: v.nodes.map(n => n.target.join(' '))}))")
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {bad}"
    assert not _blank(page.screenshot(full_page=True)), f"{name}: a blank screenshot"
    assert page.locator("h1").count() == 1 and page.locator("h1").inner_text().strip()
    hosts = {urlparse(url).hostname for url in seen if not url.startswith(("data:", "about:"))}
    assert hosts <= {"127.0.0.1"}, f"{name}: requests left the machine: {hosts}"
    assert not re.search(r"al_[A-Za-z0-9_-]{43}", page.content()), "a key on the page"
    ctx.close()
