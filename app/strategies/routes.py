from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.models import Strategy
from app.services import DomainError
from app.services.backtesting import (
    DEFAULT_FAST,
    DEFAULT_SLOW,
    Rules,
    data_range,
    default_start,
    drawdown_chart,
    equity_chart,
    no_trade_note,
    warmup_note,
)
from app.services.entitlements import UpgradeRequired, cheapest_plan_with, get_entitlements, within_limit
from app.services.strategies import (
    STRATEGY_TEMPLATES,
    count_backtests_this_month,
    count_strategies,
    create_strategy,
    delete_strategy,
    earliest_start,
    editable_ids,
    ensure_editable,
    get_backtest,
    get_strategy,
    latest_backtests,
    list_strategies,
    read_rules,
    replay,
    rules_problem,
    run_backtest,
    strategy_template,
    update_strategy,
    usage_summary,
)
from app.strategies.forms import BacktestForm, DeleteForm, StrategyForm

bp = Blueprint("strategies", __name__)


def form_error(form: StrategyForm, exc: DomainError) -> None:
    """Show a service's refusal next to the field it is about."""
    target = form.name if exc.code in {"missing_name", "invalid_name"} else form.rules
    target.errors = [*target.errors, exc.message]


@bp.get("/")
@login_required
def list_strategies_page():
    """The user's strategies, with usage, and which ones a downgrade left read-only."""
    strategies = list_strategies(current_user.id)
    editable = editable_ids(current_user.id, strategies)
    return render_template(
        "strategies/index.html",
        strategies=strategies,
        editable=editable,
        entitlements=get_entitlements(current_user.id),
        usage=usage_summary(current_user.id),
        latest=latest_backtests(current_user.id),
    )


@bp.route("/new", methods=["GET", "POST"])
@login_required
@within_limit("strategies_max", usage=count_strategies)
def create_strategy_page():
    """Create a strategy, blank or from a template (at the plan's limit the upgrade page answers instead)."""
    form = StrategyForm()
    chosen = strategy_template(request.args.get("template"))
    if chosen and not form.is_submitted():
        form.name.data, form.description.data, form.rules.data = chosen.name, chosen.description, chosen.rules
    if form.validate_on_submit():
        try:
            strategy = create_strategy(current_user.id, form.name.data, form.description.data, form.rules.data)
        except UpgradeRequired:
            raise
        except DomainError as exc:
            form_error(form, exc)
        else:
            flash(f"Strategy “{strategy.name}” created.", "success")
            return redirect(url_for("strategies.show_strategy", strategy_id=strategy.id))
    status = 400 if form.is_submitted() else 200
    return render_template(
        "strategies/form.html", form=form, strategy=None, templates=STRATEGY_TEMPLATES, chosen=chosen
    ), status


@bp.get("/<int:strategy_id>")
@login_required
def show_strategy(strategy_id: int):
    """A strategy, its backtests and the form to run another."""
    return render_strategy(get_strategy(current_user.id, strategy_id), BacktestForm())


def render_strategy(strategy: Strategy, form: BacktestForm, status: int = 200):
    """The strategy page with its backtest form: blank (the default range), or as sent with its errors."""
    last = data_range()[1]
    earliest = earliest_start(current_user.id)
    # Rules saved before they were read strictly may not read: say so before a backtest is refused.
    problem = rules_problem(strategy.rules)
    rules = Rules(DEFAULT_FAST, DEFAULT_SLOW) if problem else read_rules(strategy.rules)
    if not form.is_submitted():
        form.start_date.data = default_start(rules, earliest)
        form.end_date.data = last
    entitlements = get_entitlements(current_user.id)
    years = entitlements.limit("history_years")
    return render_template(
        "strategies/show.html",
        strategy=strategy,
        form=form,
        editable=strategy.id in editable_ids(current_user.id),
        rules_problem=problem,
        warmup_note=None if problem else warmup_note(rules, earliest),
        earliest=earliest,
        latest=last,
        entitlements=entitlements,
        more_history=None if years is None else cheapest_plan_with("history_years", at_least=years + 1),
        backtests_used=count_backtests_this_month(current_user.id),
    ), status


@bp.route("/<int:strategy_id>/edit", methods=["GET", "POST"])
@login_required
def edit_strategy(strategy_id: int):
    """Change a strategy's name, description or rules."""
    strategy = get_strategy(current_user.id, strategy_id)
    form = StrategyForm(obj=strategy)
    if form.validate_on_submit():
        try:
            update_strategy(current_user.id, strategy_id, form.name.data, form.description.data, form.rules.data)
        except UpgradeRequired:
            raise
        except DomainError as exc:
            form_error(form, exc)
        else:
            flash("Strategy saved.", "success")
            return redirect(url_for("strategies.show_strategy", strategy_id=strategy_id))
    else:
        ensure_editable(current_user.id, strategy)  # a read-only strategy answers with the upgrade page
    status = 400 if form.is_submitted() else 200
    return render_template("strategies/form.html", form=form, strategy=strategy, templates=(), chosen=None), status


@bp.get("/<int:strategy_id>/delete")
@login_required
def confirm_delete_strategy(strategy_id: int):
    """Ask before deleting, saying what goes with the strategy and what stays counted."""
    strategy = get_strategy(current_user.id, strategy_id)
    return render_template(
        "strategies/delete.html",
        strategy=strategy,
        delete_form=DeleteForm(),
        entitlements=get_entitlements(current_user.id),
        backtests_used=count_backtests_this_month(current_user.id),
    )


@bp.post("/<int:strategy_id>/delete")
@login_required
def remove_strategy(strategy_id: int):
    """Delete a strategy (its backtests still count this month)."""
    if DeleteForm().validate_on_submit():
        strategy = get_strategy(current_user.id, strategy_id)
        name = strategy.name
        delete_strategy(current_user.id, strategy_id)
        flash(f"Strategy “{name}” deleted.", "info")
    return redirect(url_for("strategies.list_strategies_page"))


@bp.post("/<int:strategy_id>/backtests")
@login_required
@within_limit("backtests_per_month", usage=count_backtests_this_month)
def start_backtest(strategy_id: int):
    """Run a backtest on the strategy and show its result; a date the form or the plan refuses is shown beside its
    field (a From date before the plan's history, when no plan goes back further), anything else as a message."""
    strategy = get_strategy(current_user.id, strategy_id)
    form = BacktestForm()
    if not form.validate_on_submit():
        return render_strategy(strategy, form, status=400)
    try:
        backtest = run_backtest(current_user.id, strategy.id, form.start_date.data, form.end_date.data)
    except UpgradeRequired:
        raise
    except DomainError as exc:
        if exc.code == "history_limit":
            form.start_date.errors = [*form.start_date.errors, exc.message]
            return render_strategy(strategy, form, status=400)
        flash(exc.message, "danger")
        return redirect(url_for("strategies.show_strategy", strategy_id=strategy.id))
    return redirect(url_for("strategies.show_backtest", strategy_id=strategy.id, backtest_id=backtest.id))


@bp.get("/<int:strategy_id>/backtests/<int:backtest_id>")
@login_required
def show_backtest(strategy_id: int, backtest_id: int):
    """One backtest's result: metrics, the equity curve against buy-and-hold, drawdown and the trades."""
    strategy = get_strategy(current_user.id, strategy_id)
    backtest = get_backtest(current_user.id, strategy_id, backtest_id)
    sim = replay(backtest)
    return render_template(
        "strategies/backtest.html",
        strategy=strategy,
        backtest=backtest,
        sim=sim,
        equity=equity_chart(sim) if sim else None,
        drawdown=drawdown_chart(sim) if sim else None,
        no_trade=no_trade_note(sim) if sim else None,
    )
