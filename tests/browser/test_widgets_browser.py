"""Operate each chapter's main widget in JupyterLab the way a learner would, and check what they see."""

from __future__ import annotations

from .conftest import SCREENSHOTS


def _output_text(page) -> str:
    return page.locator(".widget-output").first.inner_text()


def _image_src(page) -> str:
    return page.locator(".widget-output img").first.get_attribute("src") or ""


def _first_render(page, label: str, text: str, timeout: int = 120_000):
    """The slider labelled ``label``, its handle, the widget's output and the first image, once ``text`` shows."""
    from playwright.sync_api import expect

    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=label))
    handle = slider.locator(".noUi-handle")
    handle.wait_for(timeout=60_000)
    output = page.locator(".widget-output").first
    expect(output).to_contain_text(text, timeout=timeout)
    expect(page.locator(".widget-output img").first).to_be_visible(timeout=60_000)
    src = _image_src(page)
    assert src.startswith("data:image/png")
    return slider, handle, output, src


def _drag(page, slider, handle, fraction: float) -> None:
    """Drag the slider's handle with the mouse to ``fraction`` of its track."""
    box = slider.locator(".noUi-base").bounding_box()
    hb = handle.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2, steps=10)
    page.mouse.up()


def test_primer_cfg_slider_changes_the_samples(lab_page):
    from playwright.sync_api import expect

    page = lab_page("00_primer_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "CFG scale", "CFG 2 ·")

    # keyboard: three steps of 0.5 to the right → CFG 3.5
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    expect(handle).to_have_attribute("aria-valuenow", "3.5")
    expect(output).to_contain_text("CFG 3.5 ·", timeout=120_000)
    second_src = _image_src(page)
    assert second_src != first_src, "the samples did not change when the CFG slider moved"

    # mouse: drag the handle to 80% of the track → CFG 8
    _drag(page, slider, handle, 0.8)
    expect(output).to_contain_text("CFG 8 ·", timeout=120_000)
    third_src = _image_src(page)
    assert third_src not in (first_src, second_src)

    # the sampler without the cure (the default): the raw guided ε̂ paired with the clipped x̂₀ — the collapse
    page.get_by_label("recompute ε̂ from the clipped x̂₀ (the cure; untick to see the collapse)").uncheck()
    expect(output).to_contain_text("CFG 8 · 20 DDIM steps · raw guided ε̂ (the collapse)", timeout=120_000)
    assert _image_src(page) != third_src
    page.screenshot(path=str(SCREENSHOTS / "00_primer_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "00_primer_widget_output.png"))


def test_sag_n_slider_changes_the_cost_and_the_samples(lab_page):
    from playwright.sync_api import expect

    page = lab_page("01_sag_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "n (NFE", "n=4 ·", timeout=180_000)

    # keyboard: one step left on the selection slider (1, 2, 4, 8) → n = 2
    handle.focus()
    handle.press("ArrowLeft")
    expect(output).to_contain_text("n=2 ·", timeout=180_000)
    expect(output).to_contain_text(
        "network evaluations 40 → 184", timeout=10_000
    )  # 2·(20 + 8 repeats) + 16 guided × 4n
    second_src = _image_src(page)
    assert second_src != first_src, "the samples did not change when n moved"

    # mouse: drag past the right end → n = 8
    _drag(page, slider, handle, 1.05)
    expect(output).to_contain_text("n=8 ·", timeout=180_000)
    expect(output).to_contain_text("network evaluations 40 → 560", timeout=10_000)
    assert _image_src(page) not in (first_src, second_src)
    page.screenshot(path=str(SCREENSHOTS / "01_sag_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "01_sag_widget_output.png"))


def test_adjointdpm_steps_and_coordinates(lab_page):
    from playwright.sync_api import expect

    page = lab_page("02_adjointdpm_widget.ipynb")
    slider, handle, output, first_src = _first_render(
        page, "ODE steps N", "N=10 · euler · rho-coords", timeout=180_000
    )

    handle.focus()
    handle.press("ArrowRight")  # 5, 10, 20, 50 → 20
    expect(output).to_contain_text("N=20 · euler · rho-coords", timeout=180_000)

    page.get_by_role("button", name="t", exact=True).click()  # the coordinates toggle
    expect(output).to_contain_text("N=20 · euler · t-coords", timeout=180_000)
    assert _image_src(page) != first_src
    page.screenshot(path=str(SCREENSHOTS / "02_adjointdpm_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "02_adjointdpm_widget_output.png"))


def test_vistallama_attention_toggle(lab_page):
    from playwright.sync_api import expect

    page = lab_page("09_vistallama_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "token", "edvt · token 1/", timeout=180_000)

    page.get_by_role("button", name="rope", exact=True).click()
    expect(output).to_contain_text("rope · token 1/", timeout=180_000)
    assert _image_src(page) != first_src

    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    expect(output).to_contain_text("rope · token 4/", timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "09_vistallama_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "09_vistallama_widget_output.png"))


def test_boximator_editor_drag_the_end_box_and_generate(lab_page):
    from playwright.sync_api import expect

    page = lab_page("04_boximator_widget.ipynb")
    generated = page.locator(".widget-output").nth(1)
    expect(generated).to_contain_text("mean IoU of the red circle", timeout=240_000)
    request = page.locator(".widget-html", has_text="request:").first
    expect(request).to_contain_text("to (0.68, 0.35, 0.98, 0.65)")  # the default: left third → right third
    preview_src = _image_src(page)

    # drag the end box with the mouse, on the enlarged first frame, from the right third to the top middle
    page.get_by_role("button", name="end box").click()
    canvas = page.locator(".jp-OutputArea-output canvas").first
    canvas.wait_for(timeout=60_000)
    canvas.scroll_into_view_if_needed()  # the mouse only reaches what is on the screen
    page.wait_for_timeout(500)
    box = canvas.bounding_box()
    at = lambda u, v: (box["x"] + u * box["width"], box["y"] + v * box["height"])  # noqa: E731
    page.mouse.move(*at(5 / 6, 0.5))
    page.mouse.down()
    page.mouse.move(*at(0.6, 0.35), steps=5)
    page.mouse.move(*at(0.5, 0.25), steps=5)
    page.mouse.up()
    expect(request).to_contain_text("to (0.35, 0.10, 0.65, 0.40)", timeout=60_000)
    page.wait_for_function(
        "s => document.querySelector('.widget-output img').src !== s", arg=preview_src, timeout=60_000
    )  # the per-frame preview follows the drawing

    # box guidance (keyboard on its slider) waits for the button; Generate samples the dragged request
    cfg = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="box CFG")).locator(".noUi-handle")
    start = float(cfg.get_attribute("aria-valuenow"))
    key, want = ("ArrowLeft", start - 1.0) if start >= 2.0 else ("ArrowRight", start + 1.0)
    cfg.focus()
    for _ in range(2):  # steps of 0.5
        cfg.press(key)
    page.wait_for_timeout(2_000)  # let the last key's value reach the kernel before the click
    expect(generated).not_to_contain_text(f"box guidance {want:g},", timeout=5_000)
    page.get_by_role("button", name="Generate").click()
    expect(generated).to_contain_text("to (0.35, 0.10, 0.65, 0.40)", timeout=240_000)
    expect(generated).to_contain_text(f"box guidance {want:g},")
    expect(generated).to_contain_text("mean IoU of the red circle")
    page.screenshot(path=str(SCREENSHOTS / "04_boximator_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "04_boximator_widget_output.png"))


def test_magicanimate_motion_overlap_and_noise(lab_page):
    from playwright.sync_api import expect

    page = lab_page("05_magicanimate_widget.ipynb")
    plot = page.locator(".widget-output img:not([id^='_anim_img'])").first  # the per-frame error plot

    def plot_src() -> str:
        return plot.get_attribute("src") or ""

    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="overlap"))
    handle = slider.locator(".noUi-handle")
    handle.wait_for(timeout=60_000)
    output = page.locator(".widget-output").first
    expect(output).to_contain_text("· walk · 24 frames in 4 windows of 8 (overlap 2)", timeout=180_000)
    expect(plot).to_be_visible(timeout=60_000)
    first_src = plot_src()
    assert first_src.startswith("data:image/png")

    page.get_by_role("button", name="jump", exact=True).click()  # the motion toggle
    expect(output).to_contain_text("· jump · 24 frames", timeout=120_000)
    second_src = plot_src()
    assert second_src != first_src, "the error plot did not change with the motion"

    handle.focus()
    for _ in range(2):  # overlap 2 → 0: three windows of 8, seams at 8 and 16
        handle.press("ArrowLeft")
    expect(output).to_contain_text("24 frames in 3 windows of 8 (overlap 0)", timeout=120_000)
    assert plot_src() != second_src

    page.get_by_label("shared initial noise").uncheck()
    expect(output).to_contain_text("independent noise", timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / "05_magicanimate_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "05_magicanimate_widget_output.png"))


def test_dreamtalk_emotion_intensity_and_refiner(lab_page):
    from playwright.sync_api import expect

    page = lab_page("07_dreamtalk_widget.ipynb")
    curves = page.locator(".widget-output img:not([id^='_anim_img'])").first  # the static curves, below the face

    def curves_src() -> str:
        return curves.get_attribute("src") or ""

    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="intensity"))
    handle = slider.locator(".noUi-handle")
    handle.wait_for(timeout=60_000)
    output = page.locator(".widget-output").first
    expect(output).to_contain_text("happy 0.8 ·", timeout=180_000)
    expect(curves).to_be_visible(timeout=60_000)
    first_src = curves_src()
    assert first_src.startswith("data:image/png")

    page.get_by_role("button", name="sad", exact=True).click()  # the emotion toggle
    expect(output).to_contain_text("sad 0.8 ·", timeout=120_000)
    second_src = curves_src()
    assert second_src != first_src, "the curves did not change with the emotion"

    handle.focus()
    for _ in range(3):  # 0.8 → 0.5 in steps of 0.1
        handle.press("ArrowLeft")
    expect(output).to_contain_text("sad 0.5 ·", timeout=120_000)
    assert curves_src() != second_src

    page.get_by_label("lip refiner").uncheck()
    expect(output).to_contain_text("lip refiner off", timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / "07_dreamtalk_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "07_dreamtalk_widget_output.png"))


def test_metaprompts_image_prompt_and_rearrangement(lab_page):
    from playwright.sync_api import expect

    page = lab_page("03_metaprompts_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "prompt", "meta prompts + re-arrangement · 3 loop(s)")
    handle.focus()
    for _ in range(2):  # prompt 0 → 2: the attention panel changes
        handle.press("ArrowRight")
    expect(handle).to_have_attribute("aria-valuetext", "2")  # aria-valuenow reads "2.0"
    page.wait_for_function(
        "src => { const i = document.querySelector('.widget-output img'); return i && i.src !== src; }",
        arg=first_src,
        timeout=120_000,
    )
    second_src = _image_src(page)

    loops = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="loops")).locator(".noUi-handle")
    loops.focus()
    loops.press("ArrowLeft")  # 3 → 2 loops
    expect(output).to_contain_text("· 2 loop(s)", timeout=120_000)

    page.get_by_label("re-arrangement").uncheck()
    expect(output).to_contain_text("meta prompts, no re-arrangement", timeout=120_000)
    assert _image_src(page) != second_src
    page.screenshot(path=str(SCREENSHOTS / "03_metaprompts_final.png"), full_page=True)


def test_cosa_shuffle_type_an_order_and_restore(lab_page):
    from playwright.sync_api import expect

    page = lab_page("08_cosa_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "clip", "order shown: 0 1 2 3 4 5 (the true order)")
    first_text = _output_text(page)

    page.get_by_role("button", name="shuffle the frames").click()
    expect(output).to_contain_text("(shuffled)", timeout=120_000)
    assert _image_src(page) != first_src, "the frames did not move when shuffled"

    box = page.locator(".widget-text", has=page.locator(".widget-label", has_text="order")).locator("input")
    box.fill("1 0 2 3 4 5")
    box.press("Enter")
    expect(output).to_contain_text("order shown: 1 0 2 3 4 5 (shuffled)", timeout=120_000)

    page.get_by_role("button", name="true order").click()
    expect(output).to_contain_text("order shown: 0 1 2 3 4 5 (the true order)", timeout=120_000)

    handle.focus()
    handle.press("ArrowRight")  # clip 0 → 1: another clip and paragraph
    expect(handle).to_have_attribute("aria-valuetext", "1")
    page.wait_for_function(
        "src => { const i = document.querySelector('.widget-output img'); return i && i.src !== src; }",
        arg=first_src,
        timeout=120_000,
    )
    assert _output_text(page) != first_text
    page.screenshot(path=str(SCREENSHOTS / "08_cosa_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "08_cosa_widget_output.png"))


def test_pixellm_pick_type_and_move_the_image(lab_page):
    from playwright.sync_api import expect

    page = lab_page("10_pixellm_widget.ipynb")
    slider, handle, output, first_src = _first_render(page, "image", "matched IoU per true target")
    first_text = _output_text(page)

    select = page.locator(".widget-dropdown", has=page.locator(".widget-label", has_text="question")).locator("select")
    options = select.locator("option").all_inner_texts()
    assert len(options) >= 2, options
    select.select_option(label=options[1])
    expect(output).to_contain_text(f"question: {options[1]}", timeout=120_000)

    box = page.locator(".widget-text", has=page.locator(".widget-label", has_text="or type")).locator("input")
    box.fill("segment the purple circle")
    box.press("Enter")
    expect(page.locator(".widget-html").filter(has_text="not in the grammar").first).to_be_visible(timeout=60_000)
    box.fill("")
    box.press("Enter")
    expect(output).to_contain_text(f"question: {options[1]}", timeout=120_000)

    handle.focus()
    handle.press("ArrowRight")  # image 0 → 1: another image, and the questions that apply to it
    expect(handle).to_have_attribute("aria-valuetext", "1")
    page.wait_for_function(
        "src => { const i = document.querySelector('.widget-output img'); return i && i.src !== src; }",
        arg=first_src,
        timeout=120_000,
    )
    assert _output_text(page) != first_text
    page.get_by_text("with a touching pair").click()
    expect(output).to_contain_text("question:", timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / "10_pixellm_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "10_pixellm_widget_output.png"))


def test_magicvideo_noise_prior_moves_the_point(lab_page):
    from playwright.sync_api import expect

    page = lab_page("06_magicvideo_widget.ipynb")
    plot = page.locator(".widget-output img:not([id^='_anim_img'])").first  # the layout-vs-motion plot

    def plot_src() -> str:
        return plot.get_attribute("src") or ""

    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="λ"))
    handle = slider.locator(".noUi-handle")
    handle.wait_for(timeout=60_000)
    output = page.locator(".widget-output").first
    expect(output).to_contain_text("noise prior matched γ = 0.50", timeout=180_000)  # the evaluated settings
    expect(output).to_contain_text("T2I:", timeout=60_000)
    expect(plot).to_be_visible(timeout=60_000)
    first_src = plot_src()
    assert first_src.startswith("data:image/png")

    handle.focus()
    for _ in range(5):  # γ 0.50 → 0.75 in steps of 0.05
        handle.press("ArrowRight")
    expect(output).to_contain_text("noise prior matched γ = 0.75", timeout=120_000)
    second_src = plot_src()
    assert second_src != first_src, "the trade-off point did not move with γ"

    page.get_by_role("button", name="shift", exact=True).click()  # the prior's form
    expect(output).to_contain_text("noise prior shift λ = 0.75", timeout=120_000)
    assert plot_src() != second_src
    page.screenshot(path=str(SCREENSHOTS / "06_magicvideo_final.png"), full_page=True)
    page.locator(".jp-Cell-outputArea").last.screenshot(path=str(SCREENSHOTS / "06_magicvideo_widget_output.png"))
