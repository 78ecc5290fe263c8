"""yiyun.publichealth"""
