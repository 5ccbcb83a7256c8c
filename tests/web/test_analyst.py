"""Analyst journeys in a real browser: upload a log -> mapping preview -> mine with visible progress -> process map ->
click a path -> its cases -> a case timeline; the variant explorer's sorting; filters and sliders; findings; compare;
role checks. Asserts what a person sees."""

from __future__ import annotations

import re
from datetime import date

import httpx
import polars as pl
import pytest

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in


def _num(text: str) -> int:
    return int(re.sub(r"[^\d]", "", text))


@pytest.fixture(scope="module")
def run_id(browser, web: WebApp) -> str:
    """Upload the seeded home's event log through the form, check the preview, mine it and wait for the run."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        sign_in(page, web, "analyst")
        assert page.url.endswith("/analyst")
        assert page.get_by_role("heading", name="Mined runs").is_visible()
        check_page_accessible(page)
        screenshot(page, "analyst-runs")
        page.get_by_label("Log file (CSV, CSV.gz, XES, XES.gz or Parquet)").set_input_files(
            str(web.settings.home / "sim" / "events.csv"))
        page.get_by_role("button", name="Upload and preview").click()
        page.wait_for_load_state("networkidle")
        assert page.get_by_role("heading", name="Preview: events.csv").is_visible()
        # The detected mapping is shown in the selects, and the quality table lists the reader's checks.
        assert page.get_by_label("case_id (required)").input_value() == "case_id"
        assert page.get_by_label("timestamp (required)").input_value() == "timestamp"
        quality = page.locator("#quality-table").inner_text()
        assert "column mapping" in quality and "timestamp format" in quality
        check_page_accessible(page)
        screenshot(page, "analyst-preview")
        # A wrong mapping is explained, not mined.
        page.get_by_label("timestamp (required)").select_option("channel")
        page.get_by_role("button", name="Preview with this mapping").click()
        page.wait_for_load_state("networkidle")
        assert "cannot be read" in page.get_by_role("alert").inner_text()
        assert page.get_by_role("button", name="Mine this log").count() == 0
        page.get_by_label("timestamp (required)").select_option("timestamp")
        page.get_by_role("button", name="Preview with this mapping").click()
        page.wait_for_load_state("networkidle")
        page.get_by_label("Name of the run").fill("seeded demo log")
        page.get_by_role("button", name="Mine this log").click()
        # The browser lands on the run once mined (the progress page of a running job is
        # test_mining_progress_is_shown_while_the_job_runs); the finished job's progress reads done.
        page.wait_for_url(re.compile(r"/analyst/runs/[a-z0-9]+$"))
        page.get_by_role("heading", name="seeded demo log").wait_for(timeout=180_000)
        page.get_by_role("link", name="Process map").wait_for(timeout=180_000)
        rid = page.url.rsplit("/", 1)[1]
        assert page.get_by_text("Headline findings (whole run)").is_visible()
        done = page.request.get(web.url(f"/analyst/runs/{rid}/progress")).text()
        assert "100 % · done" in done and 'value="100"' in done and "Open the run" in done
        return rid
    finally:
        context.close()


def _run(web: WebApp, run_id: str):  # type: ignore[no-untyped-def]
    """The app's own loaded run (its report and per-case frame), as the pages get it."""
    from types import SimpleNamespace

    from api.web.analyst import manager

    return manager(SimpleNamespace(app=web.app)).data(run_id)  # type: ignore[arg-type]


def test_overview_shows_kpis_on_a_continuous_time_axis(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}"))
    cases = _num(page.locator(".kpis div", has_text="Cases").locator("dd").inner_text())
    assert cases == 300
    page.get_by_text("The figures as a table").click()
    weeks = page.locator("details table tbody tr")
    starts = [weeks.nth(i).locator("td").first.inner_text() for i in range(weeks.count())]
    days = [date.fromisoformat(s) for s in starts]
    assert all((b - a).days == 7 for a, b in zip(days, days[1:], strict=False)), "a week is missing on the axis"
    assert sum(_num(weeks.nth(i).locator("td").nth(1).inner_text()) for i in range(weeks.count())) == 300
    # Transfers read as what routing could have avoided, not every transfer (escalations that resolved the case
    # are not counted), on the tile and per week.
    m = _run(web, run_id).report["misrouting"]
    tile = page.locator(".kpis div", has_text="Avoidable transfers").locator("dd")
    assert tile.inner_text() == f"{100 * m['avoidable_cases'] / m['n_cases']:.1f} %"
    assert m["avoidable_cases"] < m["reassigned_cases"]
    assert page.locator(".kpis dt", has_text="Misrouted").count() == 0
    assert page.locator("details table thead th").last.text_content() == "Avoidable transfers"
    tile.locator("a").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=re.compile(r"^Cases with an avoidable transfer")).is_visible()
    assert f"{m['avoidable_cases']:,} cases" in page.locator("main").inner_text()
    page.go_back()
    page.wait_for_load_state("networkidle")
    check_page_accessible(page)
    screenshot(page, "analyst-overview")


def test_map_edge_to_cases_to_timeline(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}/map"))
    assert page.get_by_role("heading", name=re.compile(r"Process map · frequency · 300 cases")).is_visible()
    edge = page.locator("svg.pmap a.edge").last  # drawn by frequency: the last is the busiest path
    label = edge.get_attribute("aria-label") or ""
    source, target = edge.get_attribute("data-source"), edge.get_attribute("data-target")
    cases_on_edge = int(re.search(r"in ([\d,]+) cases", label).group(1).replace(",", ""))
    check_page_accessible(page)
    screenshot(page, "analyst-map")
    edge.locator("text").click()  # its label, as a person would
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=f"Cases where '{source}' is directly followed by '{target}'").is_visible()
    assert f"{cases_on_edge:,} cases" in page.locator("main").inner_text()
    rows = page.locator("#cases-table tbody tr")
    assert rows.count() == min(cases_on_edge, 50)
    waits = page.locator("#cases-table thead th", has_text="Longest wait on this edge")
    assert waits.count() == 1
    check_page_accessible(page)
    screenshot(page, "analyst-cases")
    first = rows.first.locator("td a").first
    case_id = first.inner_text()
    first.click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=f"Case {case_id}").is_visible()
    acts = page.locator("#timeline-table tbody tr td:nth-child(2)").all_inner_texts()
    assert any(a == source and b == target for a, b in zip(acts, acts[1:], strict=False)), acts
    check_page_accessible(page)
    screenshot(page, "analyst-case")


def test_keyboard_opens_an_edge(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}/map"))
    edge = page.locator("svg.pmap a.edge").first
    edge.focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state("networkidle")
    assert "/cases?" in page.url and "kind=edge" in page.url


def test_filter_and_sliders_update_the_map_in_place(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}/map"))
    email = page.locator("#f-channel option", has_text="email").inner_text()
    expected = _num(email.split("(")[1])
    page.get_by_label("Channel").select_option("email")
    page.get_by_role("heading", name=re.compile(rf"· {expected:,} cases$")).wait_for()
    assert "channel=email" in page.url  # the view is a link
    assert page.locator("#filter-count").inner_text() == f"{expected:,} of 300 cases"
    paths_before = len(page.locator("svg.pmap a.edge").all())
    page.get_by_label("What the map shows").select_option("performance")
    page.get_by_role("heading", name=re.compile(r"Process map · performance")).wait_for()
    assert re.search(r"\d+(\.\d)? (s|min|h|d)", page.locator("svg.pmap a.edge text").first.text_content() or "")
    page.locator("#s-paths").fill("10")
    page.wait_for_function(f"document.querySelectorAll('svg.pmap a.edge').length < {paths_before}")
    page.locator("#s-act").fill("50")
    page.get_by_text(re.compile(r"hidden by the slider")).wait_for()
    screenshot(page, "analyst-map-filtered")
    page.get_by_role("link", name="Variants of these cases").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=re.compile(rf"variants of {expected:,} cases")).is_visible()


def test_variant_explorer_sorts_by_each_column(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}/variants"))
    table = page.locator("#variants-table")
    # default: the happy path, then the paths with enough cases ranked by excess cost over it, then the rest
    kinds = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.className)")
    assert kinds[0] == "happy" and "happy path" in table.locator("tbody tr").first.inner_text()
    ranked = [i for i, k in enumerate(kinds) if k == "ranked"]
    assert ranked == list(range(1, len(ranked) + 1)) and len(ranked) > 5
    excess = [float(x.split()[0].replace(",", "")) for x in
              table.locator("tbody tr.ranked td:nth-child(4)").all_inner_texts()]
    assert excess == sorted(excess, reverse=True) and excess[0] > 0
    table.get_by_role("link", name="Cost", exact=True).click()
    page.wait_for_function("document.querySelector('#variants-table th[aria-sort]').textContent.includes('Cost')")
    costs = [float(x.replace(",", "")) for x in table.locator("tbody td:nth-child(3)").all_inner_texts()]
    assert costs == sorted(costs, reverse=True) and len(costs) > 5
    table.get_by_role("link", name="Cases", exact=True).click()
    page.wait_for_function("document.querySelector('#variants-table th[aria-sort]').textContent.includes('Cases')")
    cases = [_num(x.split("(")[0]) for x in table.locator("tbody td:nth-child(2)").all_inner_texts()]
    assert cases == sorted(cases, reverse=True)
    table.get_by_role("link", name=re.compile(r"^Cases ▼")).click()
    page.wait_for_function("location.search.includes('order=asc')")
    cases = [_num(x.split("(")[0]) for x in table.locator("tbody td:nth-child(2)").all_inner_texts()]
    assert cases == sorted(cases)
    check_page_accessible(page)
    screenshot(page, "analyst-variants")
    top = table.locator("tbody tr").first
    n = _num(top.locator("td:nth-child(2) a").inner_text())
    top.locator("td:nth-child(2) a").click()
    page.wait_for_load_state("networkidle")
    assert f"{n:,} cases" in page.locator("main").inner_text()


def test_variant_explorer_times_a_snapshot_as_the_report_does(page, web: WebApp, tmp_path) -> None:
    """A log cut like a snapshot (the newest cases have no end activity yet), uploaded and mined through the pages:
    the explorer's times, happy path and ranks are the report's, measured on finished cases."""
    from insight.eventlog import write_log
    from insight.mining.report import fmt_duration
    from tests.web.test_analyst_data import snapshot_log

    write_log(snapshot_log(), tmp_path / "snapshot.csv")
    sign_in(page, web, "analyst")
    page.get_by_label("Log file (CSV, CSV.gz, XES, XES.gz or Parquet)").set_input_files(str(tmp_path / "snapshot.csv"))
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_load_state("networkidle")
    page.get_by_label("Name of the run").fill("snapshot extract")
    page.get_by_role("button", name="Mine this log").click()
    page.wait_for_url(re.compile(r"/analyst/runs/[a-z0-9]+$"))
    page.get_by_role("link", name="Process map").wait_for(timeout=180_000)
    rid = page.url.rsplit("/", 1)[1]
    report = _run(web, rid).report
    assert report["extraction"]["open_cases"] == 200
    stored = {v["rank"]: v for v in report["variants"]["variants"]}
    page.goto(web.url(f"/analyst/runs/{rid}/variants"))
    section = page.locator("#variants")
    assert "300 finished cases (200 unfinished cases left out" in section.locator("p").first.inner_text()
    rows = section.locator("#variants-table tbody tr")
    cells = rows.evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.innerText))")
    assert len(cells) == min(50, report["variants"]["n_variants"])
    happy = report["variants"]["happy_path"]
    assert cells[0][0] == str(happy["rank"]) and cells[0][3] == "happy path"
    assert cells[0][-1] == " → ".join(happy["activities"]) and happy["activities"][-1] == "Closed"
    checked = open_paths = 0
    for c in cells:
        v = stored.get(int(c[0]))
        if v is None:
            continue
        assert c[-1] == " → ".join(v["activities"])
        assert _num(c[1].split("(")[0]) == v["cases"]
        assert c[4] == fmt_duration(v["median_s"]) and c[5] == fmt_duration(v["p90_s"])
        checked += 1
        open_paths += v["finished_cases"] == 0
    # the open prefixes are shown without a time (theirs is only a lower bound), as in the report
    assert checked >= 20 and open_paths > 0
    assert sum(1 for c in cells if c[4] == "n/a") >= open_paths
    check_page_accessible(page)


def test_findings_drill_down_to_cases(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/runs/{run_id}/findings"))
    for heading in ("Misrouting", "Bottlenecks", "Conformance", "Alerts", "Knowledge gaps"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    check_page_accessible(page)
    screenshot(page, "analyst-findings")
    # the headline is what routing could have avoided; every transfer is shown by kind, escalations apart
    section = page.locator("section[aria-labelledby='mis-h']")
    assert "had an avoidable transfer" in section.locator("p strong").first.inner_text()
    assert "did not stay with their first team" not in section.inner_text()
    kinds = page.locator("#transfer-kinds tbody tr")
    rows = {r.split("\t")[0]: r for r in kinds.evaluate_all("rs => rs.map(r => r.innerText)")}
    assert "misroute" in rows and rows["misroute"].split("\t")[5] == "yes"
    example = page.locator("#transfer-kinds tbody tr").first.locator("td").last.locator("a").first
    case_id = example.inner_text()
    example.click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=f"Case {case_id}").is_visible()
    page.go_back()
    page.wait_for_load_state("networkidle")
    link = page.locator("#pairs-table tbody a").first
    n = _num(link.inner_text())
    link.click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=re.compile(r"^Cases passed from ")).is_visible()
    assert _num(page.locator("main p strong").first.inner_text()) >= n


def test_compare_two_periods(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/analyst/compare?arun={run_id}&brun={run_id}&a_to=2026-02-15&b_from=2026-02-16"))
    table = page.locator("#compare-kpis")
    row = table.locator("tr", has_text="Cases").first.locator("td").all_inner_texts()
    assert _num(row[0]) + _num(row[1]) == 300
    assert table.locator("th", has_text="Misrouted").count() == 0
    avoid = table.locator("tr", has_text="Avoidable transfers").first.locator("td").all_inner_texts()
    frame = _run(web, run_id).cases
    early = frame.filter(pl.col("start").dt.date() <= date(2026, 2, 15))
    assert avoid[0] == f"{100 * early['avoidable'].mean():.1f} %"
    check_page_accessible(page)
    screenshot(page, "analyst-compare")


def test_mine_the_live_event_store(page, web: WebApp) -> None:
    sign_in(page, web, "analyst")
    page.get_by_role("button", name="Mine the live store now").click()
    page.wait_for_url(re.compile(r"/analyst/runs/[a-z0-9]+$"))
    assert page.get_by_text("live event store").first.is_visible()
    page.get_by_role("link", name="Process map").wait_for(timeout=180_000)
    from sqlalchemy import func
    from sqlmodel import select

    from routing.models import TicketEvent

    with web.session() as s:  # cases with events in the store (the seeded live tickets, and any a test added)
        live_cases = s.exec(select(func.count(func.distinct(TicketEvent.case_id)))).one()
    assert live_cases >= len(web.tickets)
    assert _num(page.locator(".kpis div", has_text="Cases").locator("dd").inner_text()) == live_cases
    page.get_by_role("link", name="Process map").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("svg.pmap a.node[data-activity='Ticket created']").count() == 1


def test_mining_progress_is_shown_while_the_job_runs(page, web: WebApp) -> None:
    """A real mining job held at its first step (its reader waits): the progress page shows the step and polls;
    once the job goes on, the page turns into the mined run by itself."""
    import threading
    from types import SimpleNamespace

    from api.insight_runs import upload_reader
    from api.web.analyst import manager

    m = manager(SimpleNamespace(app=web.app))  # type: ignore[arg-type]  # the app's run manager, as a page gets it
    up = m.store.save_upload("held.csv", (web.settings.home / "sim" / "events.csv").read_bytes())
    read = upload_reader(up, {}, pseudonym_key=web.settings.pseudonym_key.get_secret_value() or None)
    go = threading.Event()

    def held_read():  # type: ignore[no-untyped-def]
        assert go.wait(300), "the test never let the job go on"
        return read()

    meta = m.store.new_run(name="held mining job", source="upload held.csv", created_by="analyst1")
    m.start(meta, held_read)
    try:
        sign_in(page, web, "analyst")
        page.goto(web.url(f"/analyst/runs/{meta.id}"))
        assert page.get_by_role("heading", name="Mining held mining job").is_visible()
        status = page.locator("#progress [role=status]").inner_text()
        assert re.fullmatch(r"0 % · reading log \(0/\d+\)", status), status
        bar = page.get_by_label("Mining held mining job:")
        assert bar.evaluate("el => [el.tagName, el.value, el.max]") == ["PROGRESS", 0, 100]
        assert page.locator("#progress[hx-trigger='every 1s']").count() == 1  # it polls
        page.wait_for_timeout(1500)  # a poll came back: still running, still shown
        assert "reading log" in page.locator("#progress [role=status]").inner_text()
        check_page_accessible(page)
        screenshot(page, "analyst-progress")
    finally:
        go.set()
    page.get_by_text("Headline findings (whole run)").wait_for(timeout=180_000)
    assert page.get_by_role("heading", name="held mining job").is_visible()
    assert page.url.endswith(f"/analyst/runs/{meta.id}")


def test_roles_match_the_insight_api(page, web: WebApp, run_id: str) -> None:
    sign_in(page, web, "agent")
    page.goto(web.url(f"/analyst/runs/{run_id}/map"))
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    api = httpx.get(web.url("/v1/insights"), headers=web.h("agent"))
    assert api.status_code == 403
    # A knowledge manager may read runs (like GET /v1/insights) but not upload or mine.
    with httpx.Client(base_url=web.base_url) as client:
        r = client.post("/analyst/live")
        assert r.status_code in (303, 403)
