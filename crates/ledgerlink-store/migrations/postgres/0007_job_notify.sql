-- Wake idle workers in every process when a job becomes queued: a new job, or one put back in the queue (retry,
-- requeue, a review resolved). Workers LISTEN on `ledgerlink_jobs`; the notification is delivered at commit, when
-- the row is visible to their claim. Notifications with the same payload in one transaction are sent once.
CREATE FUNCTION ledgerlink_notify_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledgerlink_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_inserted_notify AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION ledgerlink_notify_job_queued();

CREATE TRIGGER jobs_requeued_notify AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued') EXECUTE FUNCTION ledgerlink_notify_job_queued();
