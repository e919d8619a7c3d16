-- Reviews are looked up by the job they hold (to resume it with the decision).
CREATE INDEX review_items_job ON review_items (job_id, id);
