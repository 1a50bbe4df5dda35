# Check user subscription in database
psql $DATABASE_URL -c "SELECT * FROM user_subscriptions WHERE user_id = '<user-id>';"

# Check entitlements cache
redis-cli GET "entitlements:<user-id>"

# Check webhook processing cache
redis-cli KEYS "webhook_processed:*"

# View recent audit logs
psql $DATABASE_URL -c "SELECT * FROM audit_logs WHERE action LIKE 'subscription%' ORDER BY created_at DESC LIMIT 20;"
