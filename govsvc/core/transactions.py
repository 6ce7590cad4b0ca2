"""One database transaction per request: committed when the response succeeds, rolled back otherwise.

Audit events recorded with ``keep_on_failure`` (refusals such as ``policy.deny``) survive a failed request: once
its transaction has ended without a commit, they are written in a transaction of their own before the response
leaves."""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from govsvc.audit.service import discard_kept_events, write_kept_events
from govsvc.core.db import AUTOCOMMIT_SESSION, get_db
from govsvc.core.problems import DATABASE_ERRORS, database_problem, problem_response

logger = logging.getLogger("govsvc.db")


def _rollback(session: Session) -> None:
    """Roll back; on a connection the database has cut, there is nothing left to roll back (the pool drops it)."""
    try:
        session.rollback()
    except DATABASE_ERRORS as error:
        logger.warning("rollback on a lost connection: %s", type(error).__name__)


def init_request_transactions(app: Flask) -> None:
    """Commit on 1xx-3xx responses, roll back on errors; a failing commit becomes a 409/503 problem."""

    @app.after_request
    def _finish_transaction(response: Response) -> Response:
        session = g.get("db_session")
        if session is None:
            return response
        database = get_db()
        if response.status_code >= 400:
            _rollback(session)
            database.discard_writes()
            return response
        if session.info.get(AUTOCOMMIT_SESSION) and not (session.new or session.dirty or session.deleted):
            discard_kept_events(session)
            database.settle()
            return response  # its statements have committed themselves and nothing is left to flush
        try:
            session.commit()
            discard_kept_events(session)
            database.settle()  # no instance answers from what this request replaced once it has returned
        except IntegrityError:
            _rollback(session)
            logger.warning("commit rejected by a constraint")
            return problem_response("conflict", "The change conflicts with the current state; nothing was saved.")
        except DATABASE_ERRORS as error:
            _rollback(session)
            problem = database_problem(error)
            if problem is not None:
                return problem
            logger.exception("commit failed")
            return problem_response("internal-error", "The change could not be saved; nothing was saved.")
        except SQLAlchemyError:
            _rollback(session)
            logger.exception("commit failed")
            return problem_response("internal-error", "The change could not be saved; nothing was saved.")
        return response

    @app.teardown_request
    def _close_session(_error: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is None:
            return
        get_db().discard_writes()  # whatever was not committed by now was rolled back
        try:
            session.close()  # rolls back anything not committed
        except DATABASE_ERRORS:
            logger.warning("closing a session on a lost connection")
        try:
            write_kept_events(session, get_db())
        except SQLAlchemyError:
            logger.exception("refusal audit events of a failed request could not be written")
